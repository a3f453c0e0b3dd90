"""The CLI as users run it: CliRunner for stdout/stderr, a subprocess for the entry point."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app
from parallelize.errors import EXIT_CODES

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def src(make_tree, n: int = 3) -> str:
    return str(make_tree({f"m{i}.py": f"def f{i}():\n    return 'MARKER-{i}'\n" for i in range(n)}))


def test_card_command_uses_summarize(llm: LLMServer, cli, make_tree) -> None:
    result = cli.invoke(app, ["section", src(make_tree), "--chunks", "2"])
    assert result.exit_code == 0, result.stderr
    assert "using the built-in 'summarize' recipe" in result.stderr
    assert result.stdout.startswith("## chunk 1/2: ")
    assert "MARKER-0" in result.stdout and "summary: 2 chunks, 2 calls" in result.stderr
    assert "summary" not in result.stdout
    assert len(llm.requests) == 2


def test_prompt_flag_places_or_appends_input(llm: LLMServer, cli, make_tree) -> None:
    result = cli.invoke(app, ["section", src(make_tree, 1), "-p", "List functions", "-q"])
    assert result.exit_code == 0 and result.stderr == ""
    assert llm.requests[0].last_user.startswith("List functions\n\n<file path=")


def test_json_format_envelope(llm: LLMServer, cli, make_tree) -> None:
    result = cli.invoke(app, ["section", src(make_tree), "--chunks", "3", "--format", "json", "-q"])
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1 and doc["command"] == "section"
    assert [t["status"] for t in doc["tasks"]] == ["ok", "ok", "ok"]
    assert all(t["paths"] and t["usage"]["prompt_tokens"] > 0 for t in doc["tasks"])
    assert "MARKER-2" in doc["result"] and doc["exit_code"] == 0


def test_output_file_keeps_stdout_empty(llm: LLMServer, cli, make_tree, tmp_path: Path) -> None:
    out = tmp_path / "out" / "merged.md"
    result = cli.invoke(app, ["section", src(make_tree), "-o", str(out), "-q"])
    assert result.exit_code == 0 and result.stdout == ""
    assert "MARKER-1" in out.read_text()


def test_dry_run_prints_plan_and_makes_no_model_call(llm: LLMServer, cli, make_tree) -> None:
    result = cli.invoke(app, ["section", src(make_tree), "--chunks", "2", "--dry-run"])
    assert result.exit_code == 0
    assert result.stdout.startswith("plan: 2 section task(s)")
    assert "--- rendered prompt of chunk 1/2 ---" in result.stdout
    assert llm.requests == []  # metadata only (the window, the tokenizer): no chat


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["section", "--chunks", "2", "--by", "file", "."], "--chunks and --by cannot be combined"),
        (["section", "/no/such/dir"], "path not found: /no/such/dir"),
        (["section", ".", "--recipe", "nope"], "no built-in recipe or file named 'nope'"),
        (["section"], "missing PATH"),
    ],
)
def test_usage_errors_exit_2_with_one_line(llm: LLMServer, cli, args, message) -> None:
    result = cli.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_no_endpoint_configured(cli, make_tree) -> None:
    result = cli.invoke(app, ["section", src(make_tree)])
    assert result.exit_code == 2
    assert "no model endpoint configured" in result.stderr
    assert "OPENAI_API_KEY" in result.stderr and "--base-url" in result.stderr


def test_empty_input_and_bad_recipe(llm: LLMServer, cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = cli.invoke(app, ["section", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no readable text files" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsytem: hi\n")
    result = cli.invoke(app, ["section", str(bad), "--recipe", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:2: unknown key 'sytem'; did you mean 'system'?" in result.stderr


def test_unknown_model_fails_fast_with_exit_2(llm: LLMServer, cli, make_tree) -> None:
    result = cli.invoke(
        app, ["section", src(make_tree, 6), "--by", "file", "-m", "nope", "-j", "1"]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.stderr and len(llm.requests) == 1


def test_partial_failure_exit_1_lists_failed_chunks(llm: LLMServer, cli, make_tree) -> None:
    llm.script("MARKER-1", status=503)
    args = ["section", src(make_tree), "--by", "file", "--max-retries", "0"]
    result = cli.invoke(app, args)
    assert result.exit_code == 1
    assert "MARKER-0" in result.stdout and "MARKER-2" in result.stdout
    assert "failed: chunk 2/3: HTTP 503" in result.stderr


def test_recipes_command_lists_builtins(cli) -> None:
    result = cli.invoke(app, ["recipes"])
    assert result.exit_code == 0
    assert re.search(r"^summarize\s+section\s+Summarize", result.stdout, re.M)


def test_every_command_has_help(cli) -> None:
    for command in ["section", "recipes"]:
        result = cli.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.stdout


def test_readme_exit_code_table_matches_the_code() -> None:
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", README.read_text(), re.M))
    assert {int(code): text for code, text in rows.items()} == EXIT_CODES


def test_entry_point_end_to_end(llm: LLMServer, entry_point: str, make_tree) -> None:
    run = subprocess.run(
        [entry_point, "section", src(make_tree), "--chunks", "3", "--prompt", "List functions"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "MARKER-2" in run.stdout
    assert "[done] chunk 3/3" in run.stderr  # plain progress lines when stderr is not a terminal
    assert "summary: 3 chunks" in run.stderr


def test_library_import_pulls_in_neither_typer_nor_rich() -> None:
    code = (
        "import sys, parallelize\n"
        "from parallelize import run_section, find_recipe, RunOptions\n"
        "bad = [m for m in ('typer', 'rich', 'openai') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == ""


def test_a_bad_placeholder_in_prompt_is_blamed_on_the_flag(cli, make_tree) -> None:
    root = make_tree({"a.txt": "hello\n"})
    args = ["section", str(root), "--recipe", "summarize", "--prompt", "Do {{ inptu }}"]
    result = cli.invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --prompt: unknown placeholder '{{ inptu }}'")
    assert ".yaml" not in result.stderr
