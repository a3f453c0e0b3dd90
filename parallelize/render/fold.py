"""Repeated per-task lines folded into one: a count, the first few names and what they share.

A 60-chunk run that hits max_tokens everywhere, or stops at a deadline, or meets the same
300-character server error on every call, says so in one line each, not sixty; `--verbose`
names every task on that line.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..records import RunResult, TaskResult
from .markdown import plural

#: Names shown on a folded line before "and N more" (all of them with --verbose).
SHOWN_NAMES = 3

#: A progress-log error at least this long is printed once; repeats point at the first.
LONG_MESSAGE = 60

NOT_STARTED = "not started: "

#: What a truncated call's reason asks of the user.
TRUNCATION_ADVICE = {
    "length": "raise max_tokens",
    "content_filter": "the provider's content filter stopped it",
}


def listed(names: Sequence[str], *, verbose: bool = False, shown: int = SHOWN_NAMES) -> str:
    """`a, b, c and 51 more`; every name when verbose."""
    if verbose or len(names) <= shown + 1:  # "and 1 more" would be no shorter than the name
        head, rest = list(names), 0
    else:
        head, rest = list(names[:shown]), len(names) - shown
    if rest:
        return f"{', '.join(head)} and {rest:,} more"
    return ", ".join(head[:-1]) + f" and {head[-1]}" if len(head) > 1 else "".join(head)


@dataclass(frozen=True)
class Fold:
    """Tasks that ended the same way: how (`failed`, `not started`, `truncated (...)`), what they
    share (the error, or the advice), and their names."""

    noun: str
    how: str
    detail: str
    names: tuple[str, ...]

    def line(self, *, verbose: bool = False) -> str:
        """One summary line (indented under `summary:`)."""
        if len(self.names) == 1:
            sep = ": " if self.how in ("failed", "not started") else "; "
            tail = f"{sep}{self.detail}" if self.detail else ""
            return f"  {self.how}: {self.names[0]}{tail}"
        tail = f"; {self.detail}" if self.detail else ""
        head = f"{plural(len(self.names), self.noun)} {self.how}"
        return f"  {head}: {listed(self.names, verbose=verbose)}{tail}"


def noun_of(result: RunResult) -> dict[int, str]:
    """What the summary calls each result: chunk, section (when aspects or clones multiply the
    chunks), candidate; keyed by id(), since aggregate calls share task indexes."""
    sections = [s for r in result.results if (s := r.task.section) is not None]
    multiplied = len({s.chunk_id for s in sections}) < len(sections)
    main = {"section": "section" if multiplied else "chunk", "vote": "candidate"}
    nouns = {id(r): main.get(result.command, "task") for r in result.results}
    return nouns | {id(r): "call" for r in result.aggregate_calls}


def folds(result: RunResult) -> list[Fold]:
    """The failed, not started and truncated tasks, grouped by what they share, in that order."""
    nouns = noun_of(result)
    groups: dict[tuple[str, str, str], list[str]] = {}
    for task in result.failed:
        error = task.error or "no reply"
        how = "not started" if error.startswith(NOT_STARTED) else "failed"
        detail = error.removeprefix(NOT_STARTED)
        groups.setdefault((how, nouns[id(task)], detail), []).append(task.task.label)
    for cut in result.truncated:
        reason = cut.completion.finish_reason if cut.completion else None
        if cut.completion is not None and reason in TRUNCATION_ADVICE:
            how, detail = f"truncated (finish_reason {reason})", TRUNCATION_ADVICE[reason]
        else:
            how, detail = "truncated (empty reply)", ""
        groups.setdefault((how, nouns[id(cut)], detail), []).append(cut.task.label)
    order = {"failed": 0, "not started": 1}
    ranked = sorted(groups.items(), key=lambda item: order.get(item[0][0], 2))  # stable
    return [Fold(noun, how, detail, tuple(names)) for (how, noun, detail), names in ranked]


def not_started(tasks: Sequence[TaskResult]) -> int:
    """How many of these failed before any request was made (a deadline, a budget, a stop)."""
    return sum(1 for t in tasks if (t.error or "").startswith(NOT_STARTED))


class RepeatedErrors:
    """The progress log's memory of long error texts: the first is printed, repeats name it."""

    def __init__(self) -> None:
        self._first: dict[str, str] = {}
        self._lock = threading.Lock()

    def shown(self, label: str, message: str) -> str:
        """`message` the first time; `(same error as LABEL)` when a long one comes again."""
        if len(message) < LONG_MESSAGE:
            return message
        with self._lock:
            first = self._first.setdefault(message, label)
        return message if first == label else f"(same error as {first})"
