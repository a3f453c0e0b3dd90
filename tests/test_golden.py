"""Golden `--format json` documents: every key, its type, value and order stay as they are.

Written before the package moved into subpackages, so a restructuring that changes any key of
`schema_version` 1 fails here. `wall_time` is left out (it is a clock); tmp paths are made
relative by running inside the test's directory (absolute ones read `<tmp>`). Regenerate
deliberately with `UPDATE_GOLDEN=1 pytest tests/test_golden.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner
from votehelp import JUDGE, TASK, candidates, judge_says

from parallelize.cli.app import app

GOLDEN = Path(__file__).parent / "golden"
FILES = {
    "app/main.py": "def main():\n    return 'MARKER-main'\n",
    "app/util.py": "def util(x):\n    return x * 2  # MARKER-util\n",
    "README.md": "# Demo\n\nA small project.\n",
}
ASPECTS_RECIPE = """\
name: golden-aspects
mode: section
prompt: |
  Aspect {{ aspect }} for {{ locale }}: {{ instructions }}
  {{ input }}
model: test-model
chunking: {by: file}
aspects:
  - {name: style, instructions: Check the style.}
  - {name: bugs, instructions: Find bugs.}
matrix:
  locale: [en, fr]
merge:
  strategy: json
  schema:
    type: object
    required: [verdict, findings]
    properties:
      verdict: {type: string}
      findings: {type: array}
  rules:
    findings: union
"""


def _scrub(doc: dict[str, Any]) -> dict[str, Any]:
    """Clocks out: `wall_time` goes, each call's `duration_s` stays as a key whose value must be a
    number of seconds (its value is a clock, its presence and type are the contract)."""
    doc.pop("wall_time", None)
    for call in [*doc.get("tasks", []), *doc.get("aggregate_calls", [])]:
        if "duration_s" in call:
            seconds = call["duration_s"]
            assert isinstance(seconds, (int, float)) and seconds >= 0, seconds
            call["duration_s"] = "<seconds>"
    return doc


def _document(cli: CliRunner, args: list[str]) -> dict[str, Any]:
    result = cli.invoke(app, [*args, "--format", "json", "-q", "-j", "1", "--no-cache"])
    assert result.stdout, result.stderr
    # The test's own directory varies from run to run.
    text = result.stdout.replace(json.dumps(os.getcwd())[1:-1], "<tmp>")
    return _scrub(json.loads(text))


def _check(name: str, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    # Compared as text: the order of keys is part of the contract, not only the key set.
    assert text == path.read_text(encoding="utf-8"), f"{path.name} changed"


@pytest.fixture
def cli(make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    make_tree(FILES, name="proj")
    (tmp_path / "aspects.yaml").write_text(ASPECTS_RECIPE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_section_concat(llm: LLMServer, cli: CliRunner) -> None:
    _check("section-concat", _document(cli, ["section", "proj", "--chunks", "2"]))


def test_section_dry_run(llm: LLMServer, cli: CliRunner) -> None:
    doc = _document(cli, ["section", "proj", "--by", "file", "-m", "test-model", "--dry-run"])
    _check("section-dry-run", doc)


def test_section_aspects_matrix_json(llm: LLMServer, cli: CliRunner) -> None:
    llm.script("bugs", '{"verdict": "comment", "findings": [{"id": 1}]}')
    llm.script(None, '{"verdict": "approve", "findings": []}')
    _check("section-aspects", _document(cli, ["section", "proj", "--recipe", "aspects.yaml"]))


def test_section_files_per_clone(llm: LLMServer, cli: CliRunner) -> None:
    args = ["section", "proj", "--recipe", "translate", "--each", "locale=fr,de"]
    _check("section-files", _document(cli, [*args, "--out-dir", "out", "-m", "test-model"]))


def test_section_llm_merge(llm: LLMServer, cli: CliRunner) -> None:
    args = ["section", "proj", "--by", "file", "--merge", "llm", "-m", "test-model"]
    _check("section-llm", _document(cli, args))


def test_vote_judge(llm: LLMServer, cli: CliRunner) -> None:
    judge_says(llm, '{"winner": "B", "reason": "greenest"}')
    candidates(llm, "alpha red", "bravo green", "charlie blue")
    assert JUDGE
    _check("vote-judge", _document(cli, ["vote", TASK, "--seed", "4"]))


def test_vote_consensus(llm: LLMServer, cli: CliRunner) -> None:
    candidates(llm, "ANSWER: 4", "ANSWER: 4", "ANSWER: 5")
    args = ["vote", TASK, "--strategy", "consensus", "--answer-pattern", r"ANSWER:\s*(\S+)"]
    _check("vote-consensus", _document(cli, args))


def test_vote_dry_run(llm: LLMServer, cli: CliRunner) -> None:
    _check("vote-dry-run", _document(cli, ["vote", TASK, "-n", "2", "--dry-run"]))
