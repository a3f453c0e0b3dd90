"""Prompt-cache friendly requests: what every worker shares (system prompt, instructions) comes
first and the data last, so a provider's prompt cache can serve the shared prefix of each call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llmserver import LLMServer, RecordedRequest
from typer.testing import CliRunner

from parallelize.cli.app import app
from parallelize.plan.template import PLACEHOLDER
from parallelize.recipe.load import builtin_recipes, find_recipe

#: Literal text a template may keep after its first placeholder: labels ("The files ("), not
#: instructions.
MAX_TEXT_AFTER_A_VARIABLE = 40
FILES = {f"mod{i}.py": f"def f{i}():\n    return {i}  # MARKER-{i}\n" for i in range(4)}
REVIEW = '{"verdict": "approve", "effort_hours": 0, "findings": []}'


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs read `src` and write `out` in the test's own directory."""
    monkeypatch.chdir(tmp_path)


def templates() -> list[tuple[str, str]]:
    """(where, template) of every shipped recipe's worker prompt and llm-merge prompt."""
    found = []
    for name in sorted(builtin_recipes()):
        recipe = find_recipe(name)
        found.append((name, recipe.prompt))
        if recipe.merge.prompt:
            found.append((f"{name} merge", recipe.merge.prompt))
    return found


@pytest.mark.parametrize(("where", "template"), templates(), ids=[w for w, _ in templates()])
def test_shipped_templates_put_instructions_first_and_the_input_last(
    where: str, template: str
) -> None:
    assert template.rstrip().endswith("{{ input }}"), f"{where}: the input is not last"
    first = PLACEHOLDER.search(template)
    assert first is not None
    after = PLACEHOLDER.sub("", template[first.start() :])
    assert len(after.strip()) <= MAX_TEXT_AFTER_A_VARIABLE, f"{where}: instructions after data"


def shared_prefix(requests: list[RecordedRequest]) -> str:
    """The longest prefix the requests' serialized messages have in common."""
    texts = [json.dumps((r.body or {})["messages"], ensure_ascii=False) for r in requests]
    first, end = texts[0], min(len(t) for t in texts)
    same = (i for i in range(end) if any(t[i] != first[i] for t in texts))
    return first[: next(same, end)]


def escaped(text: str) -> str:
    """Text as it appears inside the serialized messages."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def instructions(template: str) -> str:
    """A template's text before its first variable: identical in every request."""
    return PLACEHOLDER.split(template, maxsplit=1)[0]


def run(llm: LLMServer, make_tree, *args: str) -> list[RecordedRequest]:
    """The requests a section run over FILES sent, one chunk per file."""
    make_tree(FILES)
    base = ["section", "src", "--by", "file", "-m", "test-model", "--no-cache", "-q"]
    result = CliRunner().invoke(app, [*base, *args])
    assert result.exit_code == 0, result.stderr
    return list(llm.requests)


@pytest.mark.parametrize(
    ("name", "args", "calls"),
    [
        ("code-review", [], 4),
        ("review-aspects", [], 4 * 3),
        ("translate", ["--out-dir", "out"], 4 * 3),
        ("summarize", [], 4),
    ],
)
def test_a_shipped_recipe_sends_the_system_prompt_and_instructions_as_a_shared_prefix(
    llm: LLMServer, make_tree, name: str, args: list[str], calls: int
) -> None:
    recipe = find_recipe(name)
    if name in ("review-aspects", "code-review"):  # JSON reviews (their schemas accept it)
        llm.script(None, REVIEW)
    requests = run(llm, make_tree, "--recipe", name, *args)
    assert len(requests) == calls
    prefix = shared_prefix(requests)
    assert recipe.system and escaped(recipe.system) in prefix
    shared = instructions(recipe.prompt)
    assert len(shared) > 100 and escaped(shared) in prefix
    assert "MARKER" not in prefix  # the data itself differs, and comes after


def test_a_prompt_without_the_input_placeholder_gets_the_input_after_it(
    llm: LLMServer, make_tree
) -> None:
    ask = "List every function and what it returns, one line each, in the order they appear."
    requests = run(llm, make_tree, "-p", ask, "--system", "You read Python.")
    prefix = shared_prefix(requests)
    assert escaped(ask) in prefix and escaped("You read Python.") in prefix
    assert all(r.last_user.startswith(ask) and "MARKER" in r.last_user for r in requests)


def test_the_shared_prefix_is_what_a_prompt_cache_reports_as_cached(
    llm: LLMServer, make_tree
) -> None:
    llm.prompt_cache = True  # the loopback reports the tokens a prompt shares with earlier ones
    llm.script(None, REVIEW)
    recipe = find_recipe("code-review")
    root = make_tree(FILES)
    args = ["section", str(root), "--by", "file", "-j", "1", "--recipe", "code-review"]
    result = CliRunner().invoke(app, [*args, "-m", "test-model", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    cached = [t["usage"]["cached_tokens"] for t in json.loads(result.stdout)["tasks"]]
    shared = len(recipe.system or "") + len(instructions(recipe.prompt))
    assert cached[0] == 0 and all(c >= shared // 4 for c in cached[1:]), (cached, shared)
