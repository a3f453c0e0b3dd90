"""What every voting strategy reads and returns: candidates, the vote's context, the decision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine.executor import Executor
from ..errors import EXIT_OK
from ..recipe.vote import Vote
from ..records import TaskResult


@dataclass
class Candidate:
    """One attempt at the task, and what the vote learned about it."""

    index: int
    result: TaskResult
    model: str
    weight: float = 1.0
    #: Why this candidate cannot win (failed, truncated, a hard check...); None while in the race.
    excluded: str | None = None
    answer: str | None = None
    votes: float = 0.0
    score: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def text(self) -> str:
        return self.result.text

    @property
    def eligible(self) -> bool:
        return self.excluded is None

    @property
    def number(self) -> int:
        """1-based, as people count candidates."""
        return self.index + 1


@dataclass
class Decision:
    """A strategy's verdict: the winner's index (None when there is none) and why."""

    winner: int | None
    reason: str
    exit_code: int = EXIT_OK
    #: Fraction of votes (or judge verdicts) behind the winner, when the strategy counts votes.
    share: float | None = None
    error: str | None = None
    calls: list[TaskResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VoteContext:
    """What a strategy may use besides the candidates."""

    vote: Vote
    executor: Executor
    #: The task as the candidates saw it (system prompt and user prompt), for judges and scorers.
    task_text: str
    judge_model: str
    judge_params: Mapping[str, Any]
    seed: int
    #: Model weights of the samples an early stop did not draw: they still count in every share.
    undrawn: Sequence[float] = ()


def in_race(pool: list[Candidate]) -> list[Candidate]:
    """The candidates that may still win."""
    return [c for c in pool if c.eligible]
