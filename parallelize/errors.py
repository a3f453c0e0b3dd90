"""One exception tree; every user-facing failure is a ParallelizeError with an exit code.

ParallelizeError                 exit 1 unless a subclass says otherwise
├── ConfigError                  exit 2: the user must change something before a re-run helps
│   ├── RecipeError              bad recipe file or key
│   ├── InputError               missing path, no readable text, chunk larger than the context
│   ├── EndpointError            no endpoint configured
│   ├── CacheError               the call cache cannot be opened or read
│   └── FatalLLMError            401/403/404, bad parameter, context overflow: no retry helps
│       └── UnreachableError     also an EndpointError: no connection before any reply (refused,
│                                DNS, TLS); exit 2 after one quick retry
├── LLMError                     transport failure of one call (retried, then reported per task)
├── BudgetError                  exit 5: budget or deadline exceeded
├── BatchesPending               exit 6: --detach left batches running; a re-run collects them
│   └── CallsExported            exit 0: --export wrote the calls to a file; `batch import` reads
│                                the answers
└── InterruptedRun               exit 130: SIGINT / SIGTERM

Exit 3 (no winner) and 4 (flagged) are outcomes, not errors: they come back in
RunResult.exit_code together with the report that explains them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_WINNER = 3
EXIT_FLAGGED = 4
EXIT_BUDGET = 5
EXIT_PENDING = 6
EXIT_INTERRUPTED = 130

#: What each exit code means; the README's table is checked against this.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILED: "some or all work failed in transport (partial results still written)",
    EXIT_USAGE: "usage or configuration error",
    EXIT_NO_WINNER: "no winner (vote quorum not met, or every candidate rejected)",
    EXIT_FLAGGED: "flagged by a guardrail",
    EXIT_BUDGET: "budget or deadline exceeded",
    EXIT_PENDING: "batches pending (--detach): run the same command again to collect them",
    EXIT_INTERRUPTED: "interrupted",
}

#: When several outcomes apply, the first in this order wins.
EXIT_PRECEDENCE = (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EXIT_PENDING,
    EXIT_BUDGET,
    EXIT_FLAGGED,
    EXIT_NO_WINNER,
    EXIT_FAILED,
    EXIT_OK,
)


def combine_exit_codes(*codes: int) -> int:
    """Pick the exit code that takes precedence among several outcomes."""
    present = set(codes)
    return next((code for code in EXIT_PRECEDENCE if code in present), EXIT_OK)


class ParallelizeError(Exception):
    """Root of every error the CLI turns into a one-line message."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(ParallelizeError):
    """Something the user must fix before a re-run can help."""

    exit_code = EXIT_USAGE


class RecipeError(ConfigError):
    """A recipe file that does not parse or validate."""


class InputError(ConfigError):
    """Input paths or data that cannot be used."""


class EndpointError(ConfigError):
    """No usable model endpoint."""


class CacheError(ConfigError):
    """The call cache cannot be opened, read or written."""


class LLMError(ParallelizeError):
    """A failed model call; `retryable` says whether another attempt could succeed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
        hint: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        #: The reply's rate-limit headers: they pace the rest of the run (never the request's).
        self.headers: Mapping[str, str] = headers or {}


class FatalLLMError(LLMError, ConfigError):
    """A call failure that would repeat on every call (auth, unknown model, bad parameter)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, status=status, retryable=False, hint=hint)


class ContextOverflowError(FatalLLMError):
    """A request larger than the model's context window."""


class UnreachableError(FatalLLMError, EndpointError):
    """The endpoint could not be connected to before it ever replied (refused, DNS, TLS).

    Retrying for a minute would only hide a wrong URL or a stopped server; once the endpoint has
    answered, a failed connection is an ordinary retryable LLMError again.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)


class BudgetError(ParallelizeError):
    """A cost budget or deadline stopped the run."""

    exit_code = EXIT_BUDGET


class BatchesPending(ParallelizeError):
    """--detach: the run's batches are still running on the provider; a re-run resumes."""

    exit_code = EXIT_PENDING


class CallsExported(BatchesPending):
    """--export: the calls were written to a file for another runner; not an error (exit 0)."""

    exit_code = EXIT_OK


class InterruptedRun(ParallelizeError):
    """The run was interrupted by SIGINT or SIGTERM."""

    exit_code = EXIT_INTERRUPTED


def first_few(names: Sequence[str], shown: int = 3, *, sep: str = ", ") -> str:
    """`a, b, c (+4 more)`: the names a one-line message can hold, and how many more."""
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return sep.join(names[:shown]) + more
