"""Recipes and flags written by strangers (issue 12): they fail with exit 2 and one line before a
request is paid for, and never exhaust memory.

The dangerous inputs (alias bombs, a ten-million-clone matrix) run in a subprocess of the entry
point under an address-space limit: without the guard they die of MemoryError or time out
instead of hanging the test run.
"""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app
from parallelize.errors import RecipeError
from parallelize.recipe.limits import DEFAULT_MAX_TASKS, OWNED_PARAMS
from parallelize.recipe.load import load_recipe, parse_recipe
from parallelize.recipe.yamlread import MAX_ALIASES

#: Address space a guarded run stays far below, and an unguarded bomb reaches within seconds.
MEMORY_LIMIT = 1536 * 2**20


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def one_line_error(stderr: str) -> str:
    """The single `error: ...` line a refused run prints, with no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def limited_run(entry_point: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed CLI under an address-space limit and a timeout."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [entry_point, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        preexec_fn=limit,
    )


def billion_laughs(levels: int = 10, width: int = 10) -> list[str]:
    """YAML lines defining &l0 .. &l{levels-1}, each `width` aliases of the one before:
    width**levels strings once expanded, with exactly (levels - 1) * width aliases."""
    lines = [f"  l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return lines


def merge_key_bomb(levels: int = 10, width: int = 10) -> list[str]:
    """The same with `<<` merge keys: PyYAML itself would build width**levels key pairs."""
    lines = [f"  m0: &m0 {{{', '.join(f'k{j}: lol' for j in range(width))}}}"]
    lines += [
        f"  m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * width)}]}}" for i in range(1, levels)
    ]
    return lines


BOMBS = {
    # params values pass through pydantic untouched: the blow-up comes when they are sent.
    "params": "prompt: 'x {{ input }}'\nparams:\n" + "\n".join(billion_laughs()) + "\n",
    # a merge schema is checked and written into every prompt.
    "schema": "prompt: 'x {{ input }}'\nmerge:\n  strategy: json\n  schema:\n    type: object\n"
    "    x-laughs:\n" + "\n".join("    " + line for line in billion_laughs()) + "\n",
}


# 1. YAML limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", sorted(BOMBS))
def test_an_alias_bomb_fails_fast_with_file_line_and_no_request(
    where: str, llm: LLMServer, entry_point: str, make_tree, tmp_path: Path
) -> None:
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(BOMBS[where])
    src = make_tree({"a.py": "print('hi')\n"})
    started = time.monotonic()
    run = limited_run(entry_point, "section", str(src), "-r", str(recipe), "-q", cwd=tmp_path)
    assert time.monotonic() - started < 20
    assert run.returncode == 2, run.stderr[-2000:]
    line = one_line_error(run.stderr)
    assert f"{recipe}:" in line and "aliases expanded" in line and "write the values out" in line
    assert llm.all_requests == []


def test_an_alias_bomb_anywhere_in_the_recipe_is_refused_while_reading() -> None:
    # An unknown key would be refused anyway, but only after pydantic copied the whole value.
    text = "prompt: 'x {{ input }}'\nx_unused:\n" + "\n".join(billion_laughs()) + "\n"
    started = time.monotonic()
    # line 9 is &l6, the first level past the budget (10**7 strings)
    with pytest.raises(RecipeError, match=r"^r\.yaml:9: with its YAML aliases expanded"):
        parse_recipe(text, source="r.yaml")
    assert time.monotonic() - started < 1


def test_nested_merge_keys_count_as_expanded() -> None:
    # Recent PyYAML merges each key once (yaml/pyyaml#937); the earlier releases that
    # pyproject's pyyaml>=6.0 allows expand this exponentially while loading (yaml/pyyaml#897).
    # Counting merged mappings in full refuses it before PyYAML builds anything, on any version.
    text = "prompt: hi\nparams:\n" + "\n".join(merge_key_bomb()) + "\n"
    with pytest.raises(RecipeError, match=r"^r\.yaml:9: with its YAML aliases expanded"):
        parse_recipe(text, source="r.yaml")


def test_more_than_the_alias_limit_is_refused_at_the_alias_that_crosses_it() -> None:
    uses = "\n".join(f"  k{i}: *v" for i in range(MAX_ALIASES + 1))
    text = f"prompt: &v 'x {{{{ input }}}}'\nparams:\n{uses}\n"
    with pytest.raises(RecipeError) as err:
        parse_recipe(text, source="r.yaml")
    assert str(err.value) == (
        f"r.yaml:{MAX_ALIASES + 3}: more than {MAX_ALIASES} YAML aliases (*name); "
        "write the values out"
    )
    fewer = "\n".join(f"  k{i}: *v" for i in range(MAX_ALIASES))
    assert len(parse_recipe(f"prompt: &v hi\nparams:\n{fewer}\n").params) == MAX_ALIASES


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("params: &p\n  a: *p\n", r"r\.yaml:1: a YAML alias refers to the value that contains it"),
        ("params:\n  a: " + "[" * 80 + "]" * 80 + "\n", r"r\.yaml:2: YAML nested more than 64"),
        ("seed: " + "9" * 5000 + "\n", r"r\.yaml: invalid YAML: Exceeds the limit"),
    ],
    ids=["self-reference", "nesting", "huge-integer"],
)
def test_other_yaml_shapes_that_exhaust_the_reader_are_one_line_errors(
    text: str, message: str
) -> None:
    with pytest.raises(RecipeError, match=message) as err:
        parse_recipe(text, source="r.yaml")
    assert "\n" not in str(err.value) and "sys.set_int_max_str_digits" not in str(err.value)


def test_a_recipe_file_larger_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("prompt: |\n" + ("  " + "x" * 1000 + "\n") * 5000)  # about 5 MB
    with pytest.raises(RecipeError, match=r"big\.yaml: the recipe is larger than 4 MiB"):
        load_recipe(path)
    # 2.5 million characters, 5 MB: the limit is in bytes, and nothing truncated is parsed
    path.write_text("prompt: |\n" + ("  " + "é" * 1000 + "\n") * 2500, encoding="utf-8")
    with pytest.raises(RecipeError, match=r"big\.yaml: the recipe is larger than 4 MiB"):
        load_recipe(path)
    path.write_bytes(b"prompt: caf\xe9\n")
    with pytest.raises(RecipeError, match=r"big\.yaml: a recipe must be UTF-8 text \(byte 11\)"):
        load_recipe(path)


# 2. --max-tasks ---------------------------------------------------------------------------


def test_a_ten_million_clone_matrix_is_refused_by_arithmetic_in_a_dry_run(
    llm: LLMServer, entry_point: str, tmp_path: Path
) -> None:
    a = ",".join(f"a{i}" for i in range(1000))
    b = ",".join(f"b{i}" for i in range(10_000))
    args = ["section", "-p", "{{ a }} {{ b }}", "--each", f"a={a}", "--each", f"b={b}"]
    started = time.monotonic()
    run = limited_run(entry_point, *args, "--dry-run", cwd=tmp_path)
    assert time.monotonic() - started < 10
    assert run.returncode == 2, run.stderr[-2000:]
    assert one_line_error(run.stderr) == (
        "error: --each: the run would make at least 10,000,000 calls (10,000,000 matrix clones "
        f"[a 1,000 x b 10,000]), more than max_tasks {DEFAULT_MAX_TASKS:,}; raise --max-tasks "
        "or recipe max_tasks"
    )
    assert llm.all_requests == []


def test_a_recipe_matrix_past_max_tasks_names_file_and_line(tmp_path: Path) -> None:
    values = ", ".join(str(i) for i in range(11))
    text = f"prompt: '{{{{ a }}}}'\nmax_tasks: 20\naspects: [x, y]\nmatrix:\n  a: [{values}]\n"
    started = time.monotonic()
    with pytest.raises(RecipeError) as err:
        parse_recipe(text.replace("'{{ a }}'", "'{{ a }} {{ aspect }}'"), source="r.yaml")
    assert time.monotonic() - started < 1
    assert str(err.value) == (
        "r.yaml:4: matrix: the run would make at least 22 calls (2 aspects x 11 matrix clones "
        "[a 11]), more than max_tasks 20; raise --max-tasks or recipe max_tasks"
    )


def test_chunks_times_aspects_times_clones_is_checked_before_tasks_are_built(
    llm: LLMServer, cli: CliRunner, make_tree, tmp_path: Path
) -> None:
    recipe = tmp_path / "fan.yaml"
    recipe.write_text(
        "prompt: '{{ aspect }} {{ lang }} {{ input }}'\nmax_tasks: 40\n"
        "aspects: [a, b, c, d, e]\nmatrix:\n  lang: [fr, de, it]\n"
    )
    src = make_tree({f"f{i}.py": f"x = {i}\n" for i in range(3)})
    result = cli.invoke(app, ["section", str(src), "--by", "file", "-r", str(recipe)])
    assert result.exit_code == 2, result.stderr
    assert one_line_error(result.stderr) == (
        "error: the run would make 45 calls (3 chunks x 5 aspects x 3 matrix clones [lang 3]), "
        "more than --max-tasks 40; raise --max-tasks or recipe max_tasks"
    )
    assert llm.all_requests == []
    recipe.write_text(recipe.read_text().replace("max_tasks: 40", "max_tasks: 45"))
    result = cli.invoke(app, ["section", str(src), "--by", "file", "-r", str(recipe), "-q"])
    assert result.exit_code == 0, result.stderr
    assert len(llm.requests) == 45


def test_vote_samples_past_max_tasks_are_refused_and_the_flag_moves_the_limit(
    llm: LLMServer, cli: CliRunner
) -> None:
    many = f"{DEFAULT_MAX_TASKS + 1}"
    result = cli.invoke(app, ["vote", "2+2?", "-n", many, "--dry-run", "-q"])
    assert result.exit_code == 2
    assert one_line_error(result.stderr) == (
        f"error: the vote would make {DEFAULT_MAX_TASKS + 1:,} calls "
        f"({DEFAULT_MAX_TASKS + 1:,} samples), more than --max-tasks {DEFAULT_MAX_TASKS:,}; "
        "lower -n, or raise --max-tasks or recipe max_tasks"
    )
    result = cli.invoke(app, ["vote", "2+2?", "-n", "4", "--max-tasks", "3", "-q"])
    assert result.exit_code == 2 and "more than --max-tasks 3" in result.stderr
    assert llm.all_requests == []
    result = cli.invoke(app, ["vote", "2+2?", "-n", "3", "--max-tasks", "3", "-s", "consensus"])
    assert result.exit_code == 0, result.stderr
    assert len(llm.requests) == 3


def test_the_section_flag_moves_the_limit(llm: LLMServer, cli: CliRunner) -> None:
    args = ["section", "-p", "{{ a }}", "--each", "a=1,2,3", "-q"]
    result = cli.invoke(app, [*args, "--max-tasks", "2"])
    assert result.exit_code == 2 and "more than max_tasks 2" in result.stderr
    assert llm.all_requests == []


# 3. params may not set the fields the tool owns ---------------------------------------------


@pytest.mark.parametrize("key", sorted(OWNED_PARAMS))
def test_params_may_not_set_a_field_the_tool_owns(
    key: str, llm: LLMServer, cli: CliRunner, make_tree, tmp_path: Path
) -> None:
    recipe = tmp_path / "x.yaml"
    recipe.write_text(f"prompt: 'x {{{{ input }}}}'\nparams:\n  max_tokens: 5\n  {key}: 1\n")
    src = make_tree({"a.py": "print('hi')\n"})
    result = cli.invoke(app, ["section", str(src), "-r", str(recipe)])
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert line.startswith(f"error: {recipe}:4: params.{key}: '{key}' is set by parallelize")
    assert "remove it from params" in line
    assert llm.all_requests == []


def test_an_ensemble_model_may_not_set_them_either(llm: LLMServer, cli: CliRunner, tmp_path):
    recipe = tmp_path / "v.yaml"
    recipe.write_text("mode: vote\nmodels:\n  - name: a\n    params:\n      stream: true\n")
    result = cli.invoke(app, ["vote", "2+2?", "-r", str(recipe)])
    assert result.exit_code == 2
    assert one_line_error(result.stderr).startswith(f"error: {recipe}:5: models.0.params.stream:")
    assert llm.all_requests == []


def test_allowed_params_reach_the_request_and_cannot_replace_owned_fields(
    llm: LLMServer, cli: CliRunner, make_tree, tmp_path: Path
) -> None:
    recipe = tmp_path / "ok.yaml"
    recipe.write_text(
        "prompt: 'x {{ input }}'\nmerge: {strategy: json}\n"
        "params:\n  max_tokens: 77\n  top_k: 3\n  response_format: {type: json_object}\n"
    )
    llm.script(reply='{"ok": true}')
    src = make_tree({"a.py": "print('hi')\n"})
    result = cli.invoke(app, ["section", str(src), "-r", str(recipe), "-m", "test-model", "-q"])
    assert result.exit_code == 0, result.stderr
    body = llm.requests[0].body or {}
    assert body["max_tokens"] == 77 and body["top_k"] == 3
    assert body["response_format"] == {"type": "json_object"} and body["model"] == "test-model"


@pytest.mark.parametrize(
    ("recipe", "flags", "message"),
    [
        (
            "merge: {strategy: json}\nparams:\n  response_format: {type: text}\n",
            [],
            "{recipe}:1: merge: strategy json needs JSON answers, but params.response_format "
            "is {{'type': 'text'}}",
        ),
        (
            "params:\n  response_format: {type: text}\n",
            ["--merge", "json"],
            "--merge: strategy json needs JSON answers, but params.response_format",
        ),
        (
            "params:\n  response_format: text\naspects:\n  - {name: a, schema: {type: object}}\n",
            [],
            "{recipe}:3: aspects: aspect a's schema needs JSON answers, but "
            "params.response_format is 'text'",
        ),
    ],
    ids=["recipe-merge", "merge-flag", "aspect-schema"],
)
def test_a_response_format_that_contradicts_json_answers_names_both(
    recipe: str, flags: list[str], message: str, llm: LLMServer, cli, make_tree, tmp_path: Path
) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(f"{recipe}prompt: 'x {{{{ aspect }}}} {{{{ input }}}}'\n")
    src = make_tree({"a.py": "print('hi')\n"})
    result = cli.invoke(app, ["section", str(src), "-r", str(path), *flags])
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert message.format(recipe=path) in line
    assert "make it {type: json_object} or a json_schema" in line
    assert llm.all_requests == []


def test_a_json_schema_response_format_is_allowed_with_merge_json() -> None:
    recipe = parse_recipe(
        "merge: {strategy: json}\nparams:\n  response_format:\n    type: json_schema\n"
        "    json_schema: {name: a, schema: {type: object}}\n"
    )
    assert recipe.worker_params()["response_format"]["type"] == "json_schema"


# 4. matrix values and output paths ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("de\x00DE", r"'de\x00DE' contains the control character U+0000 (NUL)"),
        ("de\x1b[2J", r"'de\x1b[2J' contains the control character U+001B"),
    ],
    ids=["nul", "escape"],
)
def test_a_control_character_in_an_each_value_is_refused_before_any_request(
    value: str, shown: str, llm: LLMServer, cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["section", "-p", "{{ locale }}", "--each", f"locale=fr,{value}", "--out-dir", str(out)]
    result = cli.invoke(app, args)
    assert result.exit_code == 2
    assert one_line_error(result.stderr) == f"error: --each: locale[1] = {shown}; " + (
        "matrix values are plain text"
    )
    assert llm.all_requests == [] and not out.exists()


def test_a_nul_in_a_recipe_matrix_names_file_variable_and_position(
    llm: LLMServer, cli: CliRunner, tmp_path: Path
) -> None:
    recipe = tmp_path / "m.yaml"
    recipe.write_text('prompt: "{{ lang }}"\nmatrix:\n  lang: [fr, de, "it\\0"]\n')
    result = cli.invoke(app, ["section", "-r", str(recipe)])
    assert result.exit_code == 2
    assert one_line_error(result.stderr).startswith(
        f"error: {recipe}:2: matrix: lang[2] = 'it\\x00' contains the control character U+0000"
    )
    assert llm.all_requests == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("fr/FR", "contains a path separator"),
        ("fr\\FR", "contains a path separator"),
        ("..", "is not a file name"),
        ("fr\tFR", "contains the control character U+0009"),
        ("x" * 256, "is longer than a file name may be (255 bytes)"),
    ],
    ids=["slash", "backslash", "dotdot", "tab", "long"],
)
def test_a_value_that_names_an_output_file_must_be_one_plain_name(
    value: str, problem: str, llm: LLMServer, cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["section", "-p", "{{ lang }}", "--each", f"lang=en,{value}", "--out-dir", str(out)]
    result = cli.invoke(app, args)
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert line.startswith("error: --each: lang[1] = ") and problem in line
    assert "names an output file (merge.path)" in line
    assert llm.all_requests == [] and not out.exists()


def test_clone_names_longer_than_a_file_name_are_refused(llm: LLMServer, cli, tmp_path) -> None:
    long = "y" * 200
    out = tmp_path / "out"
    args = ["section", "-p", "{{ a }}{{ b }}", "--each", f"a={long}", "--each", f"b={long}"]
    result = cli.invoke(app, [*args, "--out-dir", str(out)])
    assert result.exit_code == 2
    assert "the longest clone name ({{ clone }}: a, b joined) is 401 bytes" in result.stderr
    assert llm.all_requests == [] and not out.exists()


def test_values_that_do_not_name_files_stay_free_text(llm: LLMServer, cli, tmp_path) -> None:
    # Without --out-dir a matrix value is prompt text: a slash or a tab is fine there.
    result = cli.invoke(app, ["section", "-p", "say {{ lang }}", "--each", "lang=fr/FR,a\tb", "-q"])
    assert result.exit_code == 0, result.stderr
    assert sorted(r.last_user for r in llm.requests) == ["say a\tb", "say fr/FR"]
    # and with a merge.path that does not use the variable, neither names a file
    out = tmp_path / "out"
    recipe = tmp_path / "p.yaml"
    recipe.write_text('prompt: "say {{ lang }}"\nmerge: {path: "{{ chunk_id }}-x.md"}\n')
    args = ["section", "-r", str(recipe), "--each", "lang=fr/FR", "--out-dir", str(out), "-q"]
    assert cli.invoke(app, args).exit_code == 0
    assert (out / "manifest.json").exists()


def test_an_output_directory_or_path_template_with_a_nul_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"r\.yaml:1: merge\.out_dir: 'a\\x00b' contains"):
        parse_recipe('merge: {strategy: files, out_dir: "a\\0b"}\n', source="r.yaml")
    with pytest.raises(RecipeError, match=r"r\.yaml:1: merge\.path: "):
        parse_recipe('merge: {strategy: files, path: "{{ chunk_id }}\\0.md"}\n', source="r.yaml")
    with pytest.raises(RecipeError, match=r"r\.yaml:1: aspects\.0\.name: String should have at"):
        parse_recipe(f"aspects: [{'a' * 101}]\n", source="r.yaml")


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_non_finite_numbers_in_a_recipe_are_refused(
    llm: LLMServer, tmp_path: Path, value: str
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(f"prompt: 'x {{{{ input }}}}'\nmax_cost: {value}\n")
    with pytest.raises(RecipeError, match="max_cost"):
        load_recipe(path)


def test_anchors_chained_through_aliases_cannot_nest_past_the_depth_limit(tmp_path: Path) -> None:
    """Each anchor is 40 levels deep (within the limit); chained, they would nest 1,600 deep."""
    lines = ["prompt: 'x {{ input }}'", "params:", "  a0: &a0 " + "[" * 40 + "1" + "]" * 40]
    for i in range(1, 40):
        lines.append(f"  a{i}: &a{i} " + "[" * 39 + f"*a{i - 1}" + "]" * 39)
    path = tmp_path / "deep.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecipeError, match=r"deep.yaml:\d+: .*nests more than 64 levels deep"):
        load_recipe(path)


@pytest.mark.parametrize("value", ["GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "HOME"])
def test_an_ensemble_entry_may_only_take_its_key_from_an_api_key_variable(
    tmp_path: Path, value: str
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "mode: vote\nmodels:\n  - name: m\n    base_url: https://collector.example/v1\n"
        f"    api_key_env: {value}\n"
    )
    with pytest.raises(RecipeError, match="must name one ending in _API_KEY"):
        load_recipe(path)


def test_params_may_not_hold_inf_or_nan(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("prompt: 'x {{ input }}'\nparams:\n  logit_bias: {50256: .nan}\n")
    with pytest.raises(RecipeError, match=r"params.*logit_bias.50256 is nan, not a finite number"):
        load_recipe(path)
