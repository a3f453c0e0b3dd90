"""Why an executor stops starting calls (Halt, with its exit code), and a task's internal error.

Kept apart from the executor so its retry loop stays readable; nothing here holds state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import EXIT_BUDGET, EXIT_FAILED, EXIT_INTERRUPTED, LLMError
from ..masking import for_people
from ..records import Task, TaskResult

#: `retry_budget`: not one of the last attempts was answered, so the retry budget stopped the run
#: (retrybudget.py); `stopped` in `--format json` carries the reason.
HaltReason = Literal["interrupted", "deadline", "budget", "max_failures", "fatal", "retry_budget"]


@dataclass(frozen=True)
class Halt:
    """Why the executor stopped starting calls, and when."""

    reason: HaltReason
    message: str
    at: float

    @property
    def exit_code(self) -> int:
        codes = {"interrupted": EXIT_INTERRUPTED, "deadline": EXIT_BUDGET, "budget": EXIT_BUDGET}
        return codes.get(self.reason, EXIT_FAILED)

    @property
    def abandons(self) -> bool:
        """Whether calls still in flight are abandoned after the grace period (else awaited)."""
        return self.reason in ("interrupted", "deadline")


def internal_error(exc: Exception) -> LLMError:
    """An unexpected exception inside a task: that task's failure, one line, never a traceback."""
    reason = for_people(f"{type(exc).__name__}: {exc}", 200)
    return LLMError(
        f"internal error: {reason}",
        retryable=False,
        hint="this is a bug in parallelize: please report it with the command that caused it",
    )


def unfinished(task: Task, in_flight: bool, halt: Halt | None) -> TaskResult:
    """The result of a task a halt left without one: abandoned in flight, or not started."""
    why = halt.message if halt else "the run was stopped"
    if in_flight:
        return TaskResult(task, error=f"abandoned in flight: {why}", attempts=1)
    return TaskResult(task, error=f"not started: {why}")


def interrupted_message(finished: int, queued: int, cache: Path | None) -> str:
    """What an interrupted run says: how much finished, and whether a re-run resumes."""
    done = f"interrupted: {finished} of {queued} calls finished"
    if cache is None:
        return f"{done}; the cache is off, so a re-run starts over"
    return (
        f"{done} and are saved in the cache ({cache}); {queued - finished} did not. "
        "Run the same command again to resume: only the missing calls are made"
    )
