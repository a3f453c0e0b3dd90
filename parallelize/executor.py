"""Run identical tasks on a thread pool: retries with backoff, fail-fast on fatal errors, progress.

Results come back in task order whatever order the calls finish in. Progress goes up through a
plain callback so the executor never needs a terminal.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from .client import ChatClient
from .errors import FatalLLMError, LLMError
from .records import Completion, Task, TaskResult

DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_RETRIES = 4

EventKind = Literal["queued", "start", "retry", "done", "failed"]


@dataclass(frozen=True)
class Event:
    """A progress notification from a worker thread."""

    kind: EventKind
    task: Task
    result: TaskResult | None = None
    message: str = ""


ProgressCallback = Callable[[Event], None]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring the server's Retry-After."""

    max_retries: int = DEFAULT_MAX_RETRIES
    base_delay: float = 0.5
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay * 5)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


class Executor:
    """Runs tasks through one shared client with `concurrency` identical workers."""

    def __init__(
        self,
        client: ChatClient,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: RetryPolicy | None = None,
        on_event: ProgressCallback | None = None,
    ) -> None:
        self.client = client
        self.concurrency = max(1, concurrency)
        self.retry = retry or RetryPolicy()
        self.on_event = on_event or (lambda event: None)
        self._stop = threading.Event()
        self._fatal: FatalLLMError | None = None

    def run(self, tasks: Sequence[Task]) -> list[TaskResult]:
        """Run every task; raise the first fatal error after in-flight calls finish."""
        workers = min(self.concurrency, max(1, len(tasks)))
        for task in tasks:
            self.on_event(Event("queued", task))
        with ThreadPoolExecutor(workers, thread_name_prefix="parallelize") as pool:
            results = list(pool.map(self._run_one, tasks))
        if self._fatal is not None:
            raise self._fatal
        return results

    def _run_one(self, task: Task) -> TaskResult:
        if self._stop.is_set():
            return TaskResult(task, error="not started: the run was stopped")
        self.on_event(Event("start", task))
        attempt = 0
        while True:
            attempt += 1
            try:
                completion = self.call(task)
            except FatalLLMError as exc:
                self._stop_with(exc)
                return self._finish(TaskResult(task, error=str(exc), attempts=attempt))
            except LLMError as exc:
                if not exc.retryable or attempt > self.retry.max_retries or self._stop.is_set():
                    return self._finish(TaskResult(task, error=str(exc), attempts=attempt))
                wait = self.retry.delay(attempt, exc.retry_after)
                self.on_event(Event("retry", task, message=f"{exc}; retrying in {wait:.1f}s"))
                if self._stop.wait(wait):
                    return self._finish(TaskResult(task, error=str(exc), attempts=attempt))
                continue
            return self._finish(TaskResult(task, completion, attempts=attempt))

    def call(self, task: Task) -> Completion:
        """One attempt at one task."""
        return self.client.complete(task.request)

    def _finish(self, result: TaskResult) -> TaskResult:
        self.on_event(Event("done" if result.succeeded else "failed", result.task, result))
        return result

    def _stop_with(self, exc: FatalLLMError) -> None:
        if not self._stop.is_set():
            self._fatal = exc
            self._stop.set()
