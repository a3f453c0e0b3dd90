"""Why an executor stops starting calls (Halt, with its exit code), and a task's internal error.

Kept apart from the executor so its retry loop stays readable; nothing here holds state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import EXIT_BUDGET, EXIT_FAILED, EXIT_INTERRUPTED, LLMError
from ..masking import for_people

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
