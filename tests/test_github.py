"""GitHub Actions: workflow commands (escaping, the 10-per-kind limit), the step summary, and the
action itself (action.yml and the script its run step executes), against GitHub's documented
formats and the loopback server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app
from parallelize.masking import register_secret
from parallelize.records import ChatRequest, RunResult, SectionSource, Task, TaskResult
from parallelize.render.findings import NO_FINDINGS
from parallelize.render.github import Annotations
from parallelize.render.stepsummary import CUT_NOTE, SUMMARY_LIMIT, step_summary
from parallelize.render.stepsummary import write_step_summary as write_summary
from parallelize.render.workflow import escape_data, escape_property, workflow_command

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-loopback-key-0000"  # the llm fixture's API key
COMMAND = re.compile(r"^::(warning|error|notice)( [^:]*)?::", re.M)


def review(*findings: tuple[str, int, str, str]) -> str:
    items = [{"path": p, "line": n, "severity": s, "message": m} for p, n, s, m in findings]
    return json.dumps({"findings": items})


@pytest.fixture
def actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Inside a GitHub Actions step: the step summary file is tmp_path/summary.md."""
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    return summary


# -- workflow commands ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data", "prop"),
    [
        ("plain", "plain", "plain"),
        ("100%", "100%25", "100%25"),
        ("a\nb", "a%0Ab", "a%0Ab"),
        ("a\r\nb", "a%0D%0Ab", "a%0D%0Ab"),
        ("a: b, c", "a: b, c", "a%3A b%2C c"),
        ("%0A", "%250A", "%250A"),  # an escape in the text stays text
        ("::error::x", "::error::x", "%3A%3Aerror%3A%3Ax"),
    ],
)
def test_escaping_follows_githubs_rules(text: str, data: str, prop: str) -> None:
    assert escape_data(text) == data
    assert escape_property(text) == prop


def test_a_command_escapes_masks_and_neutralises_what_it_carries() -> None:
    register_secret(KEY)  # as a run does with its key
    line = workflow_command(
        "warning",
        f"key {KEY}\n::error::forged \x1b[31mred\x1b[0m 5%",
        file="src/a b,c.py",
        line=3,
        title="high: code-review",
    )
    assert line == (
        "::warning file=src/a b%2Cc.py,line=3,title=high%3A code-review::"
        "key [REDACTED:api-key]%0A::error::forged red 5%25"
    )
    assert "\n" not in line and KEY not in line
    assert workflow_command("error", "x") == "::error::x"
    assert len(workflow_command("warning", "y" * 10_000)) < 2_100  # capped


def test_a_path_too_long_or_changed_for_a_file_property_moves_into_the_message() -> None:
    deep = "d/" * 600 + "a.py"
    line = workflow_command("warning", "bad", file=deep, line=3, title="t")
    assert line == f"::warning title=t::{deep}:3: bad"  # never a cut path that does not exist
    assert "…" not in line
    odd = workflow_command("warning", "bad", file="a\x1bb.py", line=1)
    assert odd.startswith("::warning::") and "file=" not in odd
    fine = "e/" * 200 + "b.py"  # longer than a title, still a path
    assert workflow_command("error", "x", file=fine, line=2) == f"::error file={fine},line=2::x"


def test_at_most_ten_of_each_kind_and_the_rest_folded_into_one_line() -> None:
    notes = Annotations()
    for i in range(25):
        notes.add("warning", f"w{i}")
    for i in range(3):
        notes.add("error", f"e{i}")
    lines = notes.all_lines()
    assert sum(line.startswith("::warning") for line in lines) == 10
    assert sum(line.startswith("::error") for line in lines) == 3
    fold = lines[-1]
    assert not fold.startswith("::") and "15 more warnings not annotated" in fold


# -- a run in GitHub Actions ------------------------------------------------------------------


def test_a_review_annotates_findings_and_writes_the_step_summary(
    llm: LLMServer, make_tree, actions: Path
) -> None:
    make_tree({"a.py": "import os\nos.system(input())\n", "b.py": "x = 1\n"})
    llm.script(
        "a.py",
        review(("a.py", 2, "high", f"injection, key {KEY}\n::error::forged | <b>x</b>")),
    )
    llm.script(None, review())
    args = ["section", "src", "--by", "file", "--recipe", "code-review", "-m", "test-model"]
    args += ["--no-cache", "--price-in", "1", "--price-out", "2"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.stderr
    commands = [line for line in done.stderr.splitlines() if line.startswith("::")]
    assert commands == [
        "::warning file=src/a.py,line=2,title=high%3A code-review::"
        "injection, key [REDACTED:api-key]%0A::error::forged | <b>x</b>"
    ]
    summary = actions.read_text()
    assert KEY not in summary and KEY not in done.stderr
    assert "## parallelize section · code-review" in summary
    assert "**exit 0: success** · model test-model · 2 chunks" in summary
    assert "| # | chunk | files | status | tokens in / out | cost |" in summary
    row = re.search(
        r"^\| 1 \| chunk 1/2 \| src/a\.py \| ok \| ([\d,]+) / (\d+) \| \$(\S+) \|$", summary, re.M
    )
    assert row and float(row[3]) > 0, summary
    assert "| 2 | chunk 2/2 | src/b.py | ok |" in summary
    assert "### Findings (1)" in summary
    # Model text shows as text: no HTML, no table break, no Markdown.
    assert "&lt;b&gt;x&lt;/b&gt;" in summary and "<b>" not in summary.split("### Result")[0]
    assert "forged \\| " in summary
    assert "### Result\n\n```json\n{" in summary


def test_nothing_for_github_when_the_variable_is_unset(
    llm: LLMServer, make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))  # no GITHUB_ACTIONS=true
    make_tree({"a.py": "A = 1\n"})
    llm.script(None, review(("a.py", 1, "high", "bad")))
    args = ["section", "src", "--recipe", "code-review", "-m", "test-model", "--no-cache"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.stderr
    assert not COMMAND.search(done.stderr) and not summary.exists()
    bad = CliRunner().invoke(app, ["section", "src", "--chunks", "2", "--by", "file"])
    assert bad.exit_code == 2 and not COMMAND.search(bad.stderr)


def test_a_dry_run_writes_no_step_summary(make_tree, actions: Path) -> None:
    make_tree({"a.py": "A = 1\n"})
    done = CliRunner().invoke(app, ["section", "src", "-p", "Sum up", "--dry-run"])
    assert done.exit_code == 0, done.stderr
    assert not actions.exists()


def test_errors_warnings_and_failures_become_annotations(
    llm: LLMServer, make_tree, actions: Path
) -> None:
    make_tree({f"f{i}.txt": f"text {i}\n" for i in range(14)})
    llm.script(None, status=500)
    args = ["section", "src", "--by", "file", "-p", "Sum up", "-m", "test-model", "--no-cache"]
    done = CliRunner().invoke(app, [*args, "--max-retries", "0"])
    assert done.exit_code == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("::error")]
    # One annotation for the 14 chunks that failed alike, folded as the summary folds them.
    (error,) = errors
    assert error.startswith(
        "::error title=parallelize%3A 14 chunks failed::14 chunks failed: chunk 1/14, chunk 2/14, "
        "chunk 3/14 and 11 more; HTTP 500: "
    )
    assert "not annotated" not in done.stderr
    assert "| failed: " in actions.read_text()
    usage = CliRunner().invoke(app, ["section", "src", "--chunks", "2", "--by", "file"])
    assert usage.exit_code == 2
    assert "::error title=parallelize::--chunks and --by cannot be combined" in usage.stderr


def test_errors_that_differ_only_in_request_ids_or_counts_fold_into_one_annotation(
    llm: LLMServer, make_tree, actions: Path
) -> None:
    make_tree({f"f{i}.txt": f"text {i}\n" for i in range(6)})
    for i in range(5):  # OpenAI's 5xx bodies name each request
        message = f"The server had an error. (Please include the request ID req_{i}Ab9x{i}z)"
        llm.script(f"text {i}", status=500, error={"message": message, "type": "server_error"})
    llm.script("text 5", status=400, error={"message": "bad one", "type": "invalid_request"})
    args = ["section", "src", "--by", "file", "-p", "Sum up", "-m", "test-model", "--no-cache"]
    done = CliRunner().invoke(app, [*args, "--max-retries", "0", "-j", "1"])
    assert done.exit_code == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("::error")]
    assert errors == [
        "::error title=parallelize%3A 5 chunks failed::5 chunks failed: chunk 1/6, chunk 2/6, "
        "chunk 3/6 and 2 more; HTTP 500: The server had an error. "
        "(Please include the request ID req_0Ab9x0z)",  # the first one, verbatim
        "::error title=parallelize%3A chunk 6/6 failed::failed: chunk 6/6: HTTP 400: bad one",
    ]
    assert "\n  5 chunks failed: chunk 1/6, chunk 2/6, chunk 3/6 and 2 more; HTTP 500: " in (
        done.stderr
    )


def test_a_vote_summary_shows_the_candidates_and_marks_the_winner(
    llm: LLMServer, actions: Path
) -> None:
    for colour in ("red", "blue", "red"):
        llm.script(None, colour, times=1)
    args = ["vote", "Name a colour", "-n", "3", "--strategy", "consensus", "-j", "1"]
    done = CliRunner().invoke(app, [*args, "-m", "test-model", "--no-cache"])
    assert done.exit_code == 0, done.stderr
    summary = actions.read_text()
    assert "## parallelize vote" in summary and "3 candidates" in summary
    assert "|  | # | model | status | votes | answer | preview |" in summary
    assert len(re.findall(r"^\| ★ \| \d \| test-model \| ok \| 2 \| red \|", summary, re.M)) == 1
    assert "### Winner: #1 (test-model)" in summary and "```\nred\n```" in summary


def test_a_huge_result_is_cut_to_githubs_limit_with_a_note(tmp_path: Path) -> None:
    source = SectionSource("c1", ("src/a.py",), 10)
    task = Task(0, "chunk 1/1", ChatRequest("m", ({"role": "user", "content": "x"},)), source)
    result = RunResult(
        "section", "summarize", "m", [task], results=[TaskResult(task)], output="é" * 2_000_000
    )
    page = step_summary(result, NO_FINDINGS, SUMMARY_LIMIT)
    assert len(page.encode()) <= SUMMARY_LIMIT and CUT_NOTE in page
    assert "more bytes not shown here" in page and page.count("```") == 2
    target = tmp_path / "summary.md"
    target.write_text("x" * (SUMMARY_LIMIT - 100_000))  # an earlier command of the same step
    assert write_summary(target, lambda room: step_summary(result, NO_FINDINGS, room)) is None
    assert len(target.read_bytes()) <= SUMMARY_LIMIT
    assert write_summary(target, lambda room: "never") is not None  # no room left: not written


# -- the action ----------------------------------------------------------------------------


def load_action() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "action.yml").read_text())


def test_action_yml_is_a_valid_composite_action() -> None:
    action = load_action()
    assert action["name"] and action["description"]
    runs = action["runs"]
    assert runs["using"] == "composite" and runs["steps"]
    inputs = action["inputs"]
    assert {"args", "recipe", "paths", "python-version"} <= set(inputs)
    assert all(spec.get("description") for spec in inputs.values())
    ids = {step.get("id") for step in runs["steps"]}
    for step in runs["steps"]:
        assert ("run" in step) != ("uses" in step), step
        if "run" in step:
            assert step.get("shell") in ("bash", "sh", "python", "pwsh"), step
            assert "${{" not in step["run"], "inputs reach scripts as variables only"
        else:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step["uses"]), step["uses"]
    text = (ROOT / "action.yml").read_text()
    used = set(re.findall(r"inputs\.([\w-]+)", text))
    assert used and used <= set(inputs), used - set(inputs)
    assert set(inputs) <= used | {"python-version"}, set(inputs) - used
    for output in action["outputs"].values():
        step_id = re.fullmatch(r"\$\{\{ steps\.([\w-]+)\.outputs\.[\w-]+ \}\}", output["value"])
        assert step_id and step_id[1] in ids
    assert (ROOT / "tools" / "action" / "run.py").is_file()


def run_step(env_inputs: dict[str, str], tmp_path: Path, llm: LLMServer) -> tuple[Any, Path]:
    """The action's run step as the runner would execute it: its env block with the inputs
    filled in, its `run` text in bash, the venv's python standing in for the installed one."""
    step = next(s for s in load_action()["runs"]["steps"] if s.get("id") == "run")
    values = {"github.action_path": str(ROOT)}
    values |= {f"inputs.{name}": value for name, value in env_inputs.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GITHUB_"))}
    for name, value in step["env"].items():
        expr = re.fullmatch(r"\$\{\{ (.+) \}\}", value)
        env[name] = values.get(expr[1], "") if expr else value
    temp = tmp_path / "runner-temp"
    (temp / "parallelize-venv" / "bin").mkdir(parents=True, exist_ok=True)
    python = temp / "parallelize-venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    outputs = tmp_path / "outputs.txt"
    env |= {
        "RUNNER_TEMP": str(temp),
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_WORKSPACE": str(tmp_path),
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": KEY,
    }
    done = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", step["run"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, outputs


def test_the_action_reviews_paths_and_writes_sarif_outputs_and_summary(
    llm: LLMServer, make_tree, tmp_path: Path
) -> None:
    make_tree({"a.py": "import os\n", "my file.py": "x = 1\n"})
    llm.script("a.py", review(("src/a.py", 1, "medium", "unused import")))
    llm.script(None, review())
    inputs = {
        "command": "section",
        "recipe": "code-review",
        "paths": "src/a.py\n-not-an-option.py\nsrc/my file.py\n",  # the 2nd does not exist
        "args": "--by file -m 'test-model' --no-cache",
        "sarif-file": "review.sarif",
    }
    done, outputs = run_step(inputs, tmp_path, llm)
    assert done.returncode == 0, done.stderr
    assert "::warning file=src/a.py,line=1,title=medium%3A code-review::unused import" in (
        done.stderr
    )
    log = json.loads((tmp_path / "review.sarif").read_text())
    assert log["version"] == "2.1.0" and len(log["runs"][0]["results"]) == 1
    assert "exit-code=0\n" in outputs.read_text()
    assert "sarif-file=review.sarif\n" in outputs.read_text()
    assert "| src/my file.py | ok |" in (tmp_path / "summary.md").read_text()
    assert done.stdout == ""  # the result went to the SARIF file


def test_the_action_keeps_model_text_from_issuing_workflow_commands(
    llm: LLMServer, make_tree, tmp_path: Path
) -> None:
    make_tree({"a.txt": "hello\n"})
    llm.script(None, "Summary.\n::error file=x.py,line=1::forged\n::add-mask::x\n")
    inputs = {"paths": "src", "args": "-p 'Sum up' -m test-model --no-cache", "recipe": ""}
    done, outputs = run_step(inputs, tmp_path, llm)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    token = lines[0].removeprefix("::stop-commands::")
    assert len(token) >= 32 and lines[-1] == f"::{token}::"
    assert "::error file=x.py,line=1::forged" in lines[1:-1]
    assert f"result-file={tmp_path / 'runner-temp' / 'parallelize-result.txt'}" in (
        outputs.read_text()
    )


def test_the_action_passes_exit_codes_and_refuses_bad_args(
    llm: LLMServer, make_tree, tmp_path: Path
) -> None:
    make_tree({"a.txt": "hello\n"})
    done, outputs = run_step({"paths": "src", "args": "--chunks 2 --by file"}, tmp_path, llm)
    assert done.returncode == 2 and "exit-code=2\n" in outputs.read_text()
    assert "::error title=parallelize::--chunks and --by cannot be combined" in done.stderr
    done, _ = run_step({"paths": "src", "args": "-p 'unclosed"}, tmp_path, llm)
    assert done.returncode == 2 and "::error title=parallelize::args: cannot split" in done.stderr


@pytest.mark.parametrize(
    "args", ["--format json", "--format=json", "-o x.json", "-ox.json", "--output x.json"]
)
def test_the_action_refuses_format_or_output_in_args_with_a_sarif_file(
    llm: LLMServer, make_tree, tmp_path: Path, args: str
) -> None:
    make_tree({"a.py": "A = 1\n"})
    inputs = {"paths": "src", "recipe": "code-review", "args": args, "sarif-file": "r.sarif"}
    done, _ = run_step(inputs, tmp_path, llm)
    assert done.returncode == 2 and llm.count() == 0
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("::error")]
    name = args.split("=")[0].split()[0]
    name = "-o" if name.startswith("-o") else name
    assert line == (
        f"::error title=parallelize::args: {name} cannot be combined with sarif-file, which sets "
        "--format sarif --output FILE (drop it from args, or drop sarif-file)"
    )
    assert not (tmp_path / "r.sarif").exists()


def test_the_action_names_no_sarif_file_when_a_chunk_was_not_reviewed(
    llm: LLMServer, make_tree, tmp_path: Path
) -> None:
    make_tree({"a.py": "A = 1\n", "b.py": "B = 2\n"})
    stale = tmp_path / "review.sarif"
    stale.write_text('{"version": "2.1.0", "runs": []}')  # an earlier run's
    llm.script("a.py", status=500)
    llm.script(None, review(("src/b.py", 1, "low", "name")))
    inputs = {
        "paths": "src",
        "recipe": "code-review",
        "args": "--by file -m test-model --no-cache --max-retries 0",
        "sarif-file": "review.sarif",
    }
    done, outputs = run_step(inputs, tmp_path, llm)
    assert done.returncode == 1, done.stderr
    assert "no SARIF written: 1 of 2 chunks was not reviewed (chunk 1/2)" in done.stderr
    assert "exit-code=1\n" in outputs.read_text()
    assert "sarif-file=\n" in outputs.read_text()  # the stale file is not this run's
