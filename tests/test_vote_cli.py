"""`parallelize vote` as users run it: stdout is the winner only, people-facing text on stderr."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from llmserver import LLMServer, prompt_text
from typer.testing import CliRunner
from votehelp import JUDGE, SCORER, TASK, candidates, judge_says

from parallelize.cli.app import app

README = Path(__file__).resolve().parents[1] / "README.md"
COLOURS = ["alpha red", "bravo green", "charlie blue"]
PATTERN = r"ANSWER:\s*(\S+)"


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def test_stdout_is_the_winner_and_stderr_the_table(llm: LLMServer, cli: CliRunner) -> None:
    judge_says(llm, '{"winner": "A", "reason": "calmest"}')
    candidates(llm, *COLOURS)
    result = cli.invoke(app, ["vote", TASK, "-j", "1", "--seed", "4"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "charlie blue\n"  # label A was the third candidate (order 2, 0, 1)
    assert re.search(r"★\s+3\s+test-model\s+ok\s+1\s+charlie blue", result.stderr)
    assert re.search(r"^\s+1\s+test-model\s+ok\s+0\s+alpha red", result.stderr, re.M)
    assert "winner: #3 (test-model) - judge (test-model) chose #3: calmest" in result.stderr
    assert "summary: 3 candidates, 4 calls" in result.stderr
    assert "no recipe: TASK is the prompt; 3 samples, strategy judge, temperature 0.8" in (
        result.stderr
    )


def test_json_holds_candidates_votes_reasons_and_usage(llm: LLMServer, cli: CliRunner) -> None:
    judge_says(llm, '{"winner": "B", "reason": "greenest"}')
    candidates(llm, *COLOURS)
    result = cli.invoke(app, ["vote", TASK, "-j", "1", "--seed", "4", "--format", "json", "-q"])
    assert result.exit_code == 0 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["command"] == "vote" and doc["strategy"] == "judge" and doc["seed"] == 4
    assert doc["winner"] == 0 and doc["result"] == "alpha red\n"
    assert [c["text"] for c in doc["candidates"]] == COLOURS
    assert [c["winner"] for c in doc["candidates"]] == [True, False, False]
    assert doc["permutation"] == [2, 0, 1] and doc["rounds"][0]["reason"] == "greenest"
    assert doc["rounds"][0]["labels"] == {"A": 2, "B": 0, "C": 1}
    assert [c["kind"] for c in doc["aggregate_calls"]] == ["judge"]
    assert doc["usage"]["total_tokens"] > 0 and 0 <= doc["agreement"] <= 1


def test_no_consensus_exits_3_and_still_prints_the_split(llm: LLMServer, cli: CliRunner) -> None:
    candidates(llm, "ANSWER: 42", "ANSWER: 41", "ANSWER: 40")
    args = ["vote", TASK, "-s", "consensus", "--answer-pattern", PATTERN, "-j", "1"]
    result = cli.invoke(app, args)
    assert result.exit_code == 3 and result.stdout == ""
    assert re.search(r"1\s+test-model\s+ok\s+42\s+1\s+ANSWER: 42", result.stderr)
    assert "error: no consensus: tie at the top between '42' vs '41' vs '40'" in result.stderr
    llm.reset()
    candidates(llm, "ANSWER: 42", "ANSWER: 42", "ANSWER: 40")
    result = cli.invoke(app, [*args, "--quorum", "1", "--format", "json", "--refresh"])
    doc = json.loads(result.stdout)
    assert result.exit_code == 3 and doc["exit_code"] == 3 and doc["winner"] is None
    assert [(row["answer"], row["votes"]) for row in doc["split"]] == [("42", 2), ("40", 1)]
    assert "the quorum needs >= 100%" in result.stderr


def test_weights_on_the_command_line(llm: LLMServer, cli: CliRunner) -> None:
    llm.models = ["small", "llama3.1:8b"]
    llm.script(lambda body: body["model"] == "small", "ANSWER: x")
    llm.script(lambda body: body["model"] == "llama3.1:8b", "ANSWER: y")
    args = ["vote", TASK, "-m", "small", "-m", "llama3.1:8b", "--answer-pattern", PATTERN]
    assert cli.invoke(app, [*args, "-s", "weighted", "-q"]).stdout == "ANSWER: x\n"
    result = cli.invoke(app, [*args, "-s", "weighted", "--weight", "llama3.1:8b=3", "-q"])
    assert result.exit_code == 0 and result.stdout == "ANSWER: y\n"


def test_a_weight_may_name_the_model_from_the_environment(
    llm: LLMServer, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARALLELIZE_MODEL", "test-model")
    llm.script(None, "ANSWER: x")
    args = ["vote", TASK, "-s", "weighted", "--answer-pattern", PATTERN, "-q"]
    result = cli.invoke(app, [*args, "--weight", "test-model=2"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "ANSWER: x\n" and {r.body["model"] for r in llm.requests} == {
        "test-model"
    }
    result = cli.invoke(app, [*args, "--weight", "nope=2"])
    assert result.exit_code == 2 and "(models: test-model)" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0"], "-n must be at least 1 (got 0)"),
        (["--quorum", "1.5"], "--quorum: Input should be less than or equal to 1"),
        (["--quorum", "0"], "--quorum: Input should be greater than 0"),
        (["-s", "rubric"], "vote.strategy rubric needs criteria"),
        (["--weight", "nope=2"], "--weight nope=...: no model named 'nope'"),
        (["-m", "a:8b", "--weight", "a:8b:2"], "--weight a:8b:2: expected NAME=W"),
        (["--check", "max_char=3"], "unknown check 'max_char'"),
        (["--criterion", "Clear::0"], "expected TEXT or TEXT::WEIGHT"),
        (["--answer-pattern", "("], "invalid regular expression"),
        (["--judge-rounds", "0"], "--judge-rounds: Input should be greater than or equal to 1"),
        (["-r", "nope"], "no built-in recipe or file named 'nope'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    llm: LLMServer, cli: CliRunner, args: list[str], message: str
) -> None:
    result = cli.invoke(app, ["vote", TASK, *args])
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("no recipe:")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert llm.all_requests == []


def test_task_from_a_file_or_stdin(llm: LLMServer, cli: CliRunner, tmp_path: Path) -> None:
    task = tmp_path / "task.txt"
    task.write_text("Task from a file\n")
    assert cli.invoke(app, ["vote", f"@{task}", "-n", "1", "-q"]).exit_code == 0
    assert llm.requests[0].last_user == "Task from a file\n"
    result = cli.invoke(app, ["vote", "-", "-n", "1", "-q"], input="Task from stdin")
    assert result.stdout == "ECHO Task from stdin\n"
    missing = cli.invoke(app, ["vote", "@/no/such/task.txt"])
    assert (
        missing.exit_code == 2 and "cannot read the task file /no/such/task.txt" in missing.stderr
    )
    missing = cli.invoke(app, ["vote"])
    assert missing.exit_code == 2 and "error: missing TASK" in missing.stderr


def test_dry_run_prints_the_plan_and_sends_nothing(llm: LLMServer, cli: CliRunner) -> None:
    args = ["vote", TASK, "-n", "2", "-s", "rubric", "--criterion", "Clear::2", "--dry-run"]
    result = cli.invoke(app, [*args, "--check", "max_chars=50", "--judge-model", "grader"])
    assert result.exit_code == 0 and llm.all_requests == []
    assert result.stdout.startswith("plan: vote with 2 candidate(s), strategy rubric")
    assert "  2 x score on grader" in result.stdout and "at most 6 calls" in result.stdout
    assert "[user]\nName a colour." in result.stdout


def test_n1_and_temperature_zero_notices(llm: LLMServer, cli: CliRunner) -> None:
    result = cli.invoke(app, ["vote", TASK, "-n", "1"])
    assert result.stdout == f"ECHO {TASK}\n" and len(llm.requests) == 1
    assert "n=1: no vote needed, returning the single answer" in result.stderr
    result = cli.invoke(app, ["vote", TASK, "-t", "0", "-s", "consensus"])
    assert "warning: n=3 with one model at temperature 0" in result.stderr


def test_the_answer_recipe_prints_the_agreed_answer(llm: LLMServer, cli: CliRunner) -> None:
    candidates(llm, "6*7=42\nANSWER: 42", "**Answer:** 42.", "ANSWER: 41", "x\nanswer: 42", "?")
    result = cli.invoke(app, ["vote", "What is 6*7?", "-r", "answer", "-j", "1"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "42\n"
    assert "consensus: '42' from 3 of 5 (60%, quorum >= 60%)" in result.stderr
    assert "#5 out: no answer matching answer_pattern" in result.stderr
    assert "Solve the problem step by step" in llm.requests[0].prompt


def test_the_headline_recipe_checks_then_scores(llm: LLMServer, cli: CliRunner) -> None:
    texts = [
        "Acme ships its first rocket",
        "BREAKING: Acme ships a rocket",
        "Acme's rocket reaches orbit on its first flight",
        "Acme ships " + "a very long headline " * 5,
        "Acme launches rocket",
    ]
    for text, value in zip([texts[0], texts[2], texts[4]], [6, 9, 7], strict=True):
        reply = json.dumps({"scores": {"1": value, "2": value, "3": value}, "reason": "fine"})
        llm.script(
            lambda body, t=text: SCORER in prompt_text(body) and t in prompt_text(body), reply
        )
    candidates(llm, *texts)
    result = cli.invoke(app, ["vote", "Acme reached orbit today.", "-r", "headline", "-j", "1"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == texts[2] + "\n"
    assert llm.count(SCORER) == 3  # the two candidates failing a check were never scored
    assert "#2 out: failed check: contains 'BREAKING' (must_not_include)" in result.stderr
    assert "#4 out: failed check: 115 chars > max_chars 90" in result.stderr
    assert JUDGE not in "".join(r.prompt for r in llm.requests)


def test_help_and_recipe_listing(cli: CliRunner) -> None:
    result = cli.invoke(app, ["vote", "--help"])
    assert result.exit_code == 0 and "--judge-rounds" in result.stdout
    listing = cli.invoke(app, ["recipes"]).stdout
    assert re.search(r"^answer\s+vote\s+Solve", listing, re.M)
    assert re.search(r"^headline\s+vote\s+Write", listing, re.M)


def test_readme_voting_section_documents_every_flag() -> None:
    section = README.read_text().split("## Voting", 1)[1].split("\n## ", 1)[0]
    command = typer.main.get_command(app).commands["vote"]  # type: ignore[attr-defined]
    flags = [o for p in command.params for o in p.opts if o.startswith("--")]
    missing = [f for f in flags if f not in section and f != "--help"]
    assert missing == []
    for name in ("headline", "answer"):  # the recipes are shown as they are shipped
        shipped = (README.parent / "recipes" / f"{name}.yaml").read_text()
        assert f"`recipes/{name}.yaml`" in section and f"```yaml\n{shipped}```" in section


def test_readme_weighted_example_lets_the_heavier_model_outvote(
    llm: LLMServer, cli: CliRunner
) -> None:
    section = README.read_text().split("## Voting", 1)[1]
    [example] = re.findall(r"^parallelize vote .*--strategy weighted.*\\\n.*$", section, re.M)
    args = shlex.split(example.replace("\\\n", " "))[1:]
    llm.models = ["gpt-4o-mini", "gpt-4.1-mini"]
    llm.script(lambda body: body["model"] == "gpt-4o-mini", "ANSWER: no")
    llm.script(lambda body: body["model"] == "gpt-4.1-mini", "ANSWER: yes")
    result = cli.invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "ANSWER: yes\n"


def test_run_vote_imports_neither_typer_nor_rich() -> None:
    code = (
        "import sys\nfrom parallelize import run_vote, Recipe\n"
        "print(','.join(m for m in ('typer', 'rich', 'openai') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == ""


def test_entry_point_vote(llm: LLMServer, entry_point: str) -> None:
    run = subprocess.run(
        [entry_point, "vote", "Say hi", "-s", "consensus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "ECHO Say hi\n"
    assert "[done] candidate 3/3" in run.stderr and "winner: #1" in run.stderr
