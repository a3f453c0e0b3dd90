"""`vote --pick`: a person picks the winner on a terminal. Driven through a pseudo-terminal: the
installed entry point with stdin and stderr on the pty, stdout to a file, keys written to the pty.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner
from votehelp import TASK, candidates, judge_says

from parallelize.cli.app import app
from parallelize.records import RunResult
from parallelize.render.pick import picked
from parallelize.reports import VoteReport

COLOURS = ["alpha red", "bravo green", "charlie blue"]
PATTERN = r"ANSWER:\s*(\S+)"
QUESTION = "pick 1-3"
WAIT = 60.0


class Terminal:
    """The entry point on a pseudo-terminal: `expect` text on it, `type` keys into it."""

    def __init__(self, args: list[str], stdout: Path) -> None:
        self.master, slave = pty.openpty()
        with stdout.open("wb") as out:
            self.process = subprocess.Popen(args, stdin=slave, stderr=slave, stdout=out)
        os.close(slave)
        self.screen = ""

    def expect(self, text: str) -> str:
        """Read the terminal until `text` shows (or the process ends); everything read so far."""
        deadline = time.monotonic() + WAIT
        while text not in self.screen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready and not self._read():
                break
        assert text in self.screen, self.screen
        return self.screen

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self) -> int:
        """Read the rest of the screen and the exit code."""
        code = self.process.wait(timeout=WAIT)
        while self._read():
            pass
        os.close(self.master)
        return code

    def _read(self) -> bool:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the other side is closed
            return False
        self.screen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        return bool(chunk)


@pytest.fixture
def vote_on_terminal(llm: LLMServer, entry_point: str, tmp_path: Path):
    """Start `parallelize vote ARGS --pick` on a pty; stdout goes to tmp_path/winner.txt."""
    started: list[Terminal] = []

    def start(*args: str) -> Terminal:
        command = [entry_point, "vote", TASK, "-j", "1", "--seed", "4", "--pick", *args]
        started.append(Terminal(command, tmp_path / "winner.txt"))
        return started[-1]

    yield start
    for terminal in started:
        if terminal.process.poll() is None:
            terminal.process.kill()
            terminal.process.wait()


def test_a_person_picks_another_candidate(llm: LLMServer, vote_on_terminal, tmp_path) -> None:
    judge_says(llm, '{"winner": "A", "reason": "calmest"}')  # A is #3 with this seed
    candidates(llm, *COLOURS)
    terminal = vote_on_terminal("--format", "json")
    screen = terminal.expect(f"{QUESTION} (Enter keeps #3; v N shows #N whole; q quits): ")
    assert "charlie blue" in screen and "★" in screen  # the table came first
    assert (tmp_path / "winner.txt").read_text() == ""  # nothing written before the pick
    terminal.type("7\n")  # not a candidate: asked again
    terminal.expect("type a number from 1 to 3")
    terminal.type("v 2\n")
    terminal.expect("--- #2 (test-model) ---\nbravo green\n---")
    terminal.type("2\n")
    assert terminal.finish() == 0, terminal.screen
    doc = json.loads((tmp_path / "winner.txt").read_text())
    assert doc["picked_by"] == "human" and doc["winner"] == 1 and doc["exit_code"] == 0
    assert doc["result"] == "bravo green\n"
    assert [c["winner"] for c in doc["candidates"]] == [False, True, False]
    assert doc["reason"].startswith("picked by a person; the judge strategy chose #3")
    assert "picked: #2 (test-model); the judge strategy chose #3" in terminal.screen


def test_enter_keeps_the_strategys_winner(llm: LLMServer, vote_on_terminal, tmp_path) -> None:
    judge_says(llm, '{"winner": "A", "reason": "calmest"}')
    candidates(llm, *COLOURS)
    terminal = vote_on_terminal()
    terminal.expect(QUESTION)
    terminal.type("\n")
    assert terminal.finish() == 0, terminal.screen
    assert (tmp_path / "winner.txt").read_text() == "charlie blue\n"
    assert "winner: #3 (test-model) - judge (test-model) chose #3: calmest" in terminal.screen
    assert "picked:" not in terminal.screen


def test_a_pick_when_the_strategy_found_no_winner_exits_0(
    llm: LLMServer, vote_on_terminal, tmp_path
) -> None:
    candidates(llm, "ANSWER: 42", "ANSWER: 41", "ANSWER: 40")
    terminal = vote_on_terminal("-s", "consensus", "--answer-pattern", PATTERN)
    terminal.expect(f"{QUESTION} (Enter keeps no winner;")
    terminal.type("#2\n")
    assert terminal.finish() == 0, terminal.screen
    assert (tmp_path / "winner.txt").read_text() == "ANSWER: 41\n"
    assert "picked: #2 (test-model); the consensus strategy found no winner" in terminal.screen
    assert "error: no consensus" in terminal.screen  # the strategy's verdict, shown before


def test_q_quits_with_130_and_writes_nothing(llm: LLMServer, vote_on_terminal, tmp_path) -> None:
    judge_says(llm, '{"winner": "A", "reason": "calmest"}')
    candidates(llm, *COLOURS)
    terminal = vote_on_terminal("-o", str(tmp_path / "out.txt"))
    terminal.expect(QUESTION)
    terminal.type("q\n")
    assert terminal.finish() == 130
    assert "quit: no candidate picked, nothing written" in terminal.screen
    assert not (tmp_path / "out.txt").exists()
    assert (tmp_path / "winner.txt").read_text() == ""


def test_what_is_shown_is_masked_and_made_safe(llm: LLMServer, vote_on_terminal) -> None:
    key = "sk-test-loopback-key-0000"  # the run's own key: never shown
    judge_says(llm, '{"winner": "A", "reason": "fine"}')
    candidates(llm, f"uses {key} here", "red \x1b]0;pwned\x07 title", "plain")
    terminal = vote_on_terminal()
    terminal.expect(QUESTION)
    terminal.type("v 1\n")
    terminal.expect("--- #1")
    terminal.type("v 2\n")
    terminal.expect("--- #2")
    terminal.type("q\n")
    assert terminal.finish() == 130
    assert key not in terminal.screen and "[REDACTED:api-key]" in terminal.screen
    assert "\x1b" not in terminal.screen and "pwned" not in terminal.screen  # no title change
    assert "--- #2 (test-model) ---\nred  title\n---" in terminal.screen


def test_without_a_terminal_it_refuses_before_any_request(llm: LLMServer) -> None:
    result = CliRunner().invoke(app, ["vote", TASK, "--pick"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --pick needs a terminal: stdin and stderr")
    assert len(llm.requests) == 0
    dry = CliRunner().invoke(app, ["vote", TASK, "--pick", "--dry-run"])
    assert dry.exit_code == 2 and "--pick and --dry-run cannot be combined" in dry.stderr


def test_json_says_the_strategy_picked_without_pick(llm: LLMServer) -> None:
    judge_says(llm, '{"winner": "A", "reason": "calmest"}')
    candidates(llm, *COLOURS)
    result = CliRunner().invoke(app, ["vote", TASK, "-j", "1", "--format", "json", "-q"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["picked_by"] == "strategy"


def test_a_recipe_that_prints_the_answer_prints_the_picked_answer() -> None:
    rows = [
        {"index": i, "model": "m", "status": "ok", "winner": i == 0, "answer": a, "text": t}
        for i, (a, t) in enumerate([("42", "so ANSWER: 42"), ("41", "hence ANSWER: 41")])
    ]
    vote = VoteReport("consensus", 2, 1, 0, "2 of 2 agree", None, 1.0, {}, rows)
    result = RunResult("vote", "answer", "m", [], output="42\n", vote=vote, exit_code=0)
    chosen = picked(result, vote, 1, answer_only=True)
    assert chosen.output == "41\n" and chosen.exit_code == 0
    assert isinstance(chosen.vote, VoteReport) and chosen.vote.record()["picked_by"] == "human"
    assert picked(result, vote, 1, answer_only=False).output == "hence ANSWER: 41\n"
    assert result.vote is vote and vote.picked_by == "strategy"  # the run's own record is kept


def test_a_pick_clears_no_winner_but_keeps_a_budget_or_deadline_halt() -> None:
    rows = [{"index": 0, "model": "m", "status": "ok", "winner": False, "text": "A"}]
    vote = VoteReport("consensus", 1, 1, None, "no quorum", "no quorum", None, {}, rows)
    for code, kept in ((3, 0), (1, 0), (5, 5)):
        result = RunResult("vote", "v", "m", [], output="", vote=vote, exit_code=code)
        assert picked(result, vote, 0, answer_only=False).exit_code == kept
