"""Repeated per-task lines folded into one: a count, the first few names and what they share.

A 60-chunk run that hits max_tokens everywhere, or stops at a deadline, or meets the same
300-character server error on every call, says so in one line each, not sixty; `--verbose`
names every task on that line.
"""

from __future__ import annotations

import re
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


#: What varies between copies of one error and says nothing about it: OpenAI's per-request id
#: (`request ID req_abc123`), long hex or UUID ids, and counts that grow during a run (`the
#: last 21 attempts`). Replaced in the grouping key only; the first message is shown verbatim.
VOLATILE = (
    (re.compile(r"\breq_[A-Za-z0-9]+"), "req_*"),
    (re.compile(r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b"), "<id>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{16,}\b"), "<id>"),
    (re.compile(r"\b\d[\d,]* (attempts?|calls?|retries|tries)\b"), r"N \1"),
)


def error_key(message: str) -> str:
    """What copies of one error share: the message with its volatile parts replaced."""
    for pattern, placeholder in VOLATILE:
        message = pattern.sub(placeholder, message)
    return message


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

    @property
    def failed(self) -> bool:
        """Whether these tasks have no answer (failed or not started), not just a short one."""
        return self.how in ("failed", "not started")

    @property
    def head(self) -> str:
        """`30 chunks failed`, `chunk 2/9 failed`: what happened, to how many."""
        if len(self.names) == 1:
            return f"{self.names[0]} {self.how}"
        return f"{plural(len(self.names), self.noun)} {self.how}"

    def text(self, *, verbose: bool = False) -> str:
        """`30 chunks failed: chunk 1/31, ... and 27 more; HTTP 500 ...` on one line."""
        if len(self.names) == 1:
            sep = ": " if self.failed else "; "
            tail = f"{sep}{self.detail}" if self.detail else ""
            return f"{self.how}: {self.names[0]}{tail}"
        tail = f"; {self.detail}" if self.detail else ""
        return f"{self.head}: {listed(self.names, verbose=verbose)}{tail}"

    def line(self, *, verbose: bool = False) -> str:
        """One summary line (indented under `summary:`)."""
        return "  " + self.text(verbose=verbose)


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
    # Keyed by what the errors share (error_key); each group shows its first error verbatim.
    groups: dict[tuple[str, str, str], tuple[str, list[str]]] = {}
    for task in result.failed:
        error = task.error or "no reply"
        how = "not started" if error.startswith(NOT_STARTED) else "failed"
        detail = error.removeprefix(NOT_STARTED)
        key = (how, nouns[id(task)], error_key(detail))
        groups.setdefault(key, (detail, []))[1].append(task.task.label)
    for cut in result.truncated:
        reason = cut.completion.finish_reason if cut.completion else None
        if cut.completion is not None and reason in TRUNCATION_ADVICE:
            how, detail = f"truncated (finish_reason {reason})", TRUNCATION_ADVICE[reason]
        else:
            how, detail = "truncated (empty reply)", ""
        groups.setdefault((how, nouns[id(cut)], detail), (detail, []))[1].append(cut.task.label)
    order = {"failed": 0, "not started": 1}
    ranked = sorted(groups.items(), key=lambda item: order.get(item[0][0], 2))  # stable
    return [Fold(noun, how, detail, tuple(names)) for (how, noun, _), (detail, names) in ranked]


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
            first = self._first.setdefault(error_key(message), label)
        return message if first == label else f"(same error as {first})"
