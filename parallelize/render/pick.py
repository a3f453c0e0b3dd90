"""`vote --pick`: after the candidates table, a person picks the winner on the terminal.

The table and the prompt go to stderr and the keys come from stdin, both a terminal (checked
before any request); stdout stays free for the winner, so `vote ... --pick > winner.txt` works.
Everything shown is masked and made safe for the terminal: the candidates are a server's text.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TextIO

from ..errors import EXIT_FAILED, EXIT_NO_WINNER, EXIT_OK, InterruptedRun
from ..masking import mask, terminal_safe
from ..records import RunResult
from ..reports import VoteReport
from .lines import say

#: Longest answer line read from the terminal, and most characters of a candidate shown whole.
MAX_KEYS = 1024
MAX_SHOWN = 20_000
#: Unreadable answers in a row before the pick gives up (a stuck key should not loop forever).
MAX_TRIES = 20

QUIT = ("q", "quit", "exit")


def can_pick() -> bool:
    """Whether a person can pick: the keys and the prompt need a terminal (stdout need not)."""
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def human_pick(
    result: RunResult, *, answer_only: bool = False, keys: TextIO | None = None
) -> RunResult:
    """Ask for a pick under the table already shown; the result with that winner, or as it was
    (Enter keeps the strategy's decision). `q` or end of input quits (exit 130)."""
    vote = result.vote
    if not isinstance(vote, VoteReport):
        return result
    choice = ask(vote, keys or sys.stdin)
    if choice is None:
        return result
    return picked(result, vote, choice, answer_only=answer_only)


def ask(vote: VoteReport, keys: TextIO) -> int | None:
    """The index of the candidate picked, or None to keep the strategy's decision."""
    usable = {c["index"] for c in vote.candidates if c["status"] in ("ok", "truncated")}
    if not usable:
        say("nothing to pick: every candidate failed")
        return None
    count = len(vote.candidates)
    keep = f"Enter keeps #{vote.winner + 1}" if vote.winner is not None else "Enter keeps no winner"
    question = f"pick 1-{count} ({keep}; v N shows #N whole; q quits): "
    for _ in range(MAX_TRIES):
        sys.stderr.write(question)
        sys.stderr.flush()
        line = keys.readline(MAX_KEYS)
        if not line:  # end of input (Ctrl-D): nobody is there to pick
            raise InterruptedRun("quit: no candidate picked, nothing written")
        answer = line.strip().lower()
        if not answer:
            return None
        if answer in QUIT:
            raise InterruptedRun("quit: no candidate picked, nothing written")
        view = answer.removeprefix("v").strip() if answer.startswith("v") else None
        number = _number(view if view is not None else answer, count)
        if number is None:
            say(f"type a number from 1 to {count}, v and a number, Enter, or q")
        elif view is not None:
            show_whole(vote, number)
        elif number in usable:
            return number
        else:
            say(f"#{number + 1} failed and has no text: pick another")
    raise InterruptedRun(f"quit: no usable answer in {MAX_TRIES} tries, nothing written")


def show_whole(vote: VoteReport, index: int) -> None:
    """One candidate's whole text (masked, escape sequences removed), then the question again."""
    candidate = vote.candidates[index]
    text = candidate["text"] or f"(no text: {candidate['status']})"
    more = len(text) - MAX_SHOWN
    shown = text[:MAX_SHOWN] + (f"\n... {more:,} more characters" if more > 0 else "")
    model = candidate["model"]
    sys.stderr.write(terminal_safe(mask(f"--- #{index + 1} ({model}) ---\n{shown}\n---\n")))
    sys.stderr.flush()


def picked(result: RunResult, vote: VoteReport, index: int, *, answer_only: bool) -> RunResult:
    """The run with the person's candidate as its winner and artifact: exit 0 where the strategy
    found no winner (1, 3), the run's own code otherwise (a budget or deadline halt stays 5)."""
    candidate = vote.candidates[index]
    output = candidate["text"].rstrip("\n") + "\n"
    if answer_only and candidate.get("answer"):
        output = f"{candidate['answer']}\n"
    if vote.winner == index:
        chose = f"the {vote.strategy} strategy chose it too"
    elif vote.winner is not None:
        chose = f"the {vote.strategy} strategy chose #{vote.winner + 1}"
    else:
        chose = f"the {vote.strategy} strategy found no winner"
    report = dataclasses.replace(
        vote,
        winner=index,
        reason=f"picked by a person; {chose} ({vote.reason})",
        error=None,
        picked_by="human",
        candidates=[{**c, "winner": c["index"] == index} for c in vote.candidates],
    )
    say(f"picked: #{index + 1} ({candidate['model']}); {chose}")
    code = EXIT_OK if result.exit_code in (EXIT_FAILED, EXIT_NO_WINNER) else result.exit_code
    return dataclasses.replace(result, output=output, vote=report, exit_code=code)


def _number(text: str, count: int) -> int | None:
    """`3` or `#3` as the index 2, when it names one of the candidates."""
    digits = text.removeprefix("#")
    if not (digits.isascii() and digits.isdigit()) or not 1 <= int(digits) <= count:
        return None
    return int(digits) - 1
