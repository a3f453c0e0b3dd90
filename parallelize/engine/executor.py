"""Run identical tasks on a pool of workers: cache, pacing, retries, budgets, deadline and halts.

Results come back in task order whatever order the calls finish in. Progress goes up through a
plain callback so the executor never needs a terminal. Workers are daemon threads, so a call
abandoned after an interrupt never holds the process open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from ..defaults import DEFAULT_CONCURRENCY
from ..errors import CacheError, ContextOverflowError, FatalLLMError, InterruptedRun, LLMError
from ..records import Completion, Event, Notice, ProgressCallback, Task, TaskResult
from .batchoptions import BatchOptions
from .cache import CallCache, request_key
from .client import ChatClient
from .costs import Ledger, PriceBook, output_cap, prompt_tokens
from .durations import format_duration
from .halts import Halt, HaltReason, internal_error, interrupted_message, unfinished
from .overflows import OverflowMemory
from .pacing import Pacer
from .queue import WorkQueue
from .retry import RetryPolicy, refused_wait
from .retrybudget import RetryBudget, rerun_advice
from .toolloop import ToolLoop, offers_tools

#: Seconds that calls in flight may still take after an interrupt or the deadline.
STOP_GRACE = 10.0
#: Seconds within which a second signal counts as the first one again.
SAME_SIGNAL = 0.2
#: Seconds between the waiting caller's checks for signals and the deadline.
POLL = 0.1

#: What the progress shows for a request refused as too long, while it is split.
_SPLITTING = "longer than the server's context window: splitting it"


class Executor:
    """Runs tasks through one shared client with `concurrency` identical workers."""

    def __init__(
        self,
        client: ChatClient,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: RetryPolicy | None = None,
        on_event: ProgressCallback | None = None,
        cache: CallCache | None = None,
        refresh: bool = False,
        pacer: Pacer | None = None,
        ledger: Ledger | None = None,
        max_failures: int | None = None,
        deadline: float | None = None,
        on_notice: Notice | None = None,
        batch: BatchOptions | None = None,
        tools: ToolLoop | None = None,  # worker and candidate calls loop through tool calls
    ) -> None:
        self.client, self.tools = client, tools
        self.concurrency = max(1, concurrency)
        self.batch = batch  # --batch: calls go through the provider's Batch API (batchrun.py)
        self.retry = retry or RetryPolicy()
        #: Shared by every worker: retries stop while too many calls fail (retrybudget.py).
        self.budget = RetryBudget.for_concurrency(self.concurrency)
        self.on_event = on_event or (lambda event: None)
        self.cache, self.refresh = cache, refresh
        #: Requests refused as too long, remembered beside the cache (see `run(keep_overflows)`).
        self.overflows = OverflowMemory(cache.path.parent) if cache is not None else None
        self._keep_overflows = False
        self.pacer = pacer or Pacer(concurrency=self.concurrency)
        self.ledger = ledger or Ledger(PriceBook())
        self.max_failures = max_failures
        #: time.monotonic() after which no call starts.
        self.deadline = deadline
        self.notice = on_notice or (lambda message: None)
        self.halt: Halt | None = None
        self.queued = self.finished = self.cached = self.failures = self.attempts = 0
        #: Requests that repeated a failed or throttled one (so attempts = first ones + retries).
        self.retries = 0
        #: The results a batch answered (charged the batch rates; batchrun.py).
        self.batched: list[TaskResult] = []
        self._fatal: FatalLLMError | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._signals, self._first_signal = 0, 0.0
        self._warned: set[str] = set()

    @property
    def exit_code(self) -> int:
        """The code of the halt that stopped the run (0 when nothing stopped it)."""
        return self.halt.exit_code if self.halt else 0

    def interrupt(self) -> None:
        """Ask the run to stop; safe in a signal handler (it only counts, the caller acts).

        A signal within SAME_SIGNAL seconds of the first is the same interrupt: GNU `timeout`
        signals the process and its group, so one timeout arrives twice.
        """
        now = time.monotonic()
        if self._signals and now - self._first_signal < SAME_SIGNAL:
            return
        if not self._signals:
            self._first_signal = now
        self._signals += 1

    def run(self, tasks: Sequence[Task], *, keep_overflows: bool = False) -> list[TaskResult]:
        """Every task's result in task order; raises a fatal error or InterruptedRun at the end.

        `keep_overflows`: a request the server refuses as too long fails only its task (a result
        with `overflow` set, for the caller to split) instead of halting the run, and is
        remembered so that a re-run answers it without sending it again.
        """
        self._forget_fatal()
        self._keep_overflows = keep_overflows
        work = WorkQueue(list(tasks))
        self.queued += len(work.tasks)
        for task in work.tasks:
            self.on_event(Event("queued", task))
        self._lookup(work)
        pending = [i for i, r in enumerate(work.results) if r is None]
        self._check_signals()
        self._check_deadline()
        if pending and self.halt is None:
            requests = [work.tasks[i].request for i in pending]
            self.ledger.check(requests, first=not self.attempts, batch=self.batch is not None)
            if self.batch is not None:  # what it leaves (--finish-online) goes online
                from .batchrun import run_batch  # only with --batch

                pending = run_batch(self, work, pending)
        if pending and self.halt is None:
            workers = min(self.concurrency, len(pending))
            work.schedule(pending, workers=workers)
            self._work(work, workers=workers)
        work.close()
        self._flush_cache()
        results = [
            r or unfinished(work.tasks[i], i in work.in_flight, self.halt)
            for i, r in enumerate(work.results)
        ]
        if self._fatal is not None:
            raise self._fatal
        if self.halt is not None and self.halt.reason == "interrupted":
            cache = self.cache.path if self.cache is not None else None
            raise InterruptedRun(interrupted_message(self.finished, self.queued, cache))
        return results

    # ---- the caller's thread ----

    def call_keys(self, tasks: Sequence[Task]) -> list[str | None]:
        """Each task's cache key; None for a tool task (its rounds are cached one by one)."""
        keys: list[str | None] = []
        for task in tasks:
            to = self.client.endpoint_for(task.request)
            key = request_key(to.base_url, task.request, api_version=to.api_version)
            keys.append(None if self.tools and offers_tools(task) else key)
        return keys

    def _lookup(self, work: WorkQueue) -> None:
        """Fill in the tasks whose calls are already in the cache."""
        if self.cache is None:
            return
        work.keys = self.call_keys(work.tasks)
        if self.refresh:
            return
        try:
            hits = self.cache.get_many([k for k in work.keys if k])
        except CacheError as exc:
            self._drop_cache(exc)
            return
        for index, key in enumerate(work.keys):
            hit = hits.get(key or "")
            if hit is not None:
                task = work.tasks[index]
                work.results[index] = result = TaskResult(task, hit, attempts=0)
                self.ledger.save(task.request.model, hit.usage)
                self.cached += 1
                self.finished += 1
                self.on_event(Event("done", task, result))
        self._recall_overflows(work)

    def _recall_overflows(self, work: WorkQueue) -> None:
        """Answer the requests a server already refused as too long, without sending them."""
        if not self._keep_overflows or self.overflows is None:
            return
        missing = [k for k, r in zip(work.keys, work.results, strict=True) if k and r is None]
        known = self.overflows.recall(missing) if missing else {}
        for index, key in enumerate(work.keys):
            if key in known and work.results[index] is None:
                task = work.tasks[index]
                message = f"{known[key]} (remembered from an earlier run)"
                work.results[index] = result = TaskResult(task, error=message, overflow=True)
                self.finished += 1
                self.on_event(Event("retry", task, result, message=_SPLITTING))

    def _work(self, work: WorkQueue, *, workers: int) -> None:
        """Start the workers and wait for them, watching for signals and the deadline."""
        for n in range(workers):
            worker = threading.Thread(
                target=self._worker, args=(work,), name=f"parallelize-{n}", daemon=True
            )
            worker.start()
        while not work.done.wait(POLL):
            self._check_signals()
            self._check_deadline()
            halt, now = self.halt, time.monotonic()
            if halt and halt.abandons and (now > halt.at + STOP_GRACE or self._signals > 1):
                return

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self._halt("deadline", "the deadline (--deadline) passed")

    def _check_signals(self) -> None:
        if self._signals and (self.halt is None or self.halt.reason != "interrupted"):
            self._halt("interrupted", "interrupted")
            self.notice(
                "stopping: no new calls; calls in flight get up to "
                f"{STOP_GRACE:.0f}s to finish (interrupt again to stop now)"
            )

    # ---- worker threads ----

    def _worker(self, work: WorkQueue) -> None:
        try:
            while not self._stop.is_set() and (index := work.take()) is not None:
                task = work.tasks[index]
                started = time.monotonic()
                try:
                    if self.tools is not None and offers_tools(task):
                        result = self.tools.run(self, task, self._run_one)
                    else:
                        result = self._run_one(task, work.keys[index])
                except Exception as exc:  # a bug fails its task, never the worker
                    result = TaskResult(task, error=str(internal_error(exc)), attempts=1)
                result = replace(result, duration=time.monotonic() - started)
                if work.finish(index, result):
                    self._finish(result)
        finally:
            work.leave()

    def _run_one(self, task: Task, key: str | None) -> TaskResult:
        """One task with its retries; returns its result whatever happens."""
        self.on_event(Event("start", task))
        request = task.request
        reserve = self.ledger.estimate_call(request)
        tokens = prompt_tokens(request) + output_cap(request) if self.pacer.needs_tokens else 0
        attempt = throttled = 0
        error: LLMError | None = None
        while True:
            if not self.ledger.reserve(reserve):
                budget = f"${self.ledger.max_cost:g}"
                self._halt("budget", f"the budget (--max-cost {budget}) is reached")
                return self._gave_up(task, attempt, error)
            permit = self.pacer.acquire(tokens)
            if permit is None:
                self.ledger.settle(reserve, request.model, None)
                return self._gave_up(task, attempt, error)
            attempt += 1
            with self._lock:
                self.attempts += 1
            try:
                completion = self.client.complete(request, **self._time_left())
            except Exception as raised:  # nothing a server sends may kill a worker
                exc = raised if isinstance(raised, LLMError) else internal_error(raised)
                refused = refused_wait(exc.retry_after, self.deadline)
                pause = None if refused else exc.retry_after
                self.pacer.release(
                    permit, status=exc.status, headers=exc.headers, retry_after=pause
                )
                self.ledger.settle(reserve, request.model, None)
                error = exc
                throttled += exc.status == 429
                outcome = self._after_failure(task, key, exc, attempt, throttled, refused)
                if isinstance(outcome, TaskResult):
                    return outcome
                self.on_event(
                    Event("retry", task, message=f"{exc}; retrying in {format_duration(outcome)}")
                )
                if self._stop.wait(outcome):
                    return TaskResult(task, error=str(exc), attempts=attempt)
                with self._lock:
                    self.retries += 1
                continue
            self.budget.succeeded()
            self.pacer.release(
                permit,
                status=completion.status,
                headers=completion.headers,
                tokens_used=completion.usage.total_tokens,
            )
            self.ledger.settle(reserve, request.model, completion.usage)
            self.warn(*completion.warnings)
            self._store(key, completion)
            return TaskResult(task, completion, attempts=attempt)

    def _after_failure(
        self,
        task: Task,
        key: str | None,
        exc: LLMError,
        attempt: int,
        throttled: int,
        refused: str | None,
    ) -> TaskResult | float:
        """A failed attempt's outcome: the task's result, or the seconds to wait before retrying.

        `refused`: why the wait the server asked for is not taken (None: taken or none asked).
        """
        if isinstance(exc, ContextOverflowError) and self._keep_overflows:
            self._remember_overflow(key, exc)
            return TaskResult(task, error=str(exc), attempts=attempt, overflow=True)
        if isinstance(exc, FatalLLMError):
            self._fail_fast(exc)
            return TaskResult(task, error=str(exc), attempts=attempt)
        limited = exc.status == 429
        if exc.retryable and not limited:  # a 429 is the pacer's to handle (retrybudget.py)
            self.budget.failed()
        if not self._may_retry(exc, attempt - throttled, throttled):
            return TaskResult(task, error=str(exc), attempts=attempt)
        if refused:
            return TaskResult(task, error=f"{exc} ({refused})", attempts=attempt)
        if not limited and not self.budget.allow():
            return self._refuse_retry(task, exc, attempt)
        return self.retry.delay(max(1, attempt - throttled), exc.retry_after, throttled=limited)

    def _refuse_retry(self, task: Task, exc: LLMError, attempts: int) -> TaskResult:
        """The budget refused this call's retry: it fails now, saying a re-run resumes; when the
        server answers nothing at all, the run also stops starting calls (retrybudget.py)."""
        reason = self.budget.reason()
        if self.budget.outage:
            self._halt("retry_budget", f"{reason} (is the server down?)")
        advice = rerun_advice(cached=self.cache is not None)
        return TaskResult(task, error=f"{exc} ({reason}; {advice})", attempts=attempts)

    def retry_warning(self) -> str | None:
        """The run's warning about calls the retry budget failed (None: there were none)."""
        if self.halt is not None and self.halt.reason == "retry_budget":
            return None  # the halt's warning says it, with the calls not started
        return self.budget.warning(cached=self.cache is not None)

    def _remember_overflow(self, key: str | None, exc: ContextOverflowError) -> None:
        memory = self.overflows
        if memory is not None and key is not None and self.cache is not None:
            memory.remember(key, str(exc))

    def count_cached(self, task: Task, hit: Completion) -> None:
        """A call answered from the cache (a tool round): its saving and the count."""
        self.ledger.save(task.request.model, hit.usage)
        with self._lock:
            self.cached += 1

    def warn(self, *warnings: str) -> None:
        """Tell each distinct reply anomaly once per run."""
        for warning in warnings:
            with self._lock:
                if warning in self._warned:
                    continue
                self._warned.add(warning)
            self.notice(f"warning: {warning}")

    def _may_retry(self, exc: LLMError, failures: int, throttled: int) -> bool:
        if not exc.retryable or self._stop.is_set():
            return False
        if exc.status == 429:
            return throttled <= self.retry.max_throttled
        return failures <= self.retry.max_retries

    def _gave_up(self, task: Task, attempts: int, error: LLMError | None) -> TaskResult:
        why = self.halt.message if self.halt else "the run was stopped"
        if error is None:
            return TaskResult(task, error=f"not started: {why}", attempts=0)
        return TaskResult(task, error=f"{error} (no retry: {why})", attempts=attempts)

    def _time_left(self) -> dict[str, float]:
        """The timeout a call may still have under the deadline (nothing without one)."""
        if self.deadline is None:
            return {}
        return {"timeout": self.deadline + STOP_GRACE - time.monotonic()}

    def _store(self, key: str | None, completion: Completion) -> None:
        cache = self.cache
        if cache is None or key is None:
            return
        try:
            cache.put(key, completion)
        except CacheError as exc:
            self._drop_cache(exc)

    def _flush_cache(self) -> None:
        """Wait for the cache's writer: what the run reports as saved is on disk."""
        if self.cache is None:
            return
        try:
            self.cache.flush()
        except CacheError as exc:
            self._drop_cache(exc)

    def _drop_cache(self, exc: CacheError) -> None:
        with self._lock:
            if self.cache is None:
                return
            self.cache = None
        self.notice(f"warning: {exc}; continuing without the cache")

    def _finish(self, result: TaskResult) -> None:
        if result.overflow:  # not a failure yet: the caller splits it
            with self._lock:
                self.finished += 1
            self.on_event(Event("retry", result.task, result, message=_SPLITTING))
            return
        with self._lock:
            if result.succeeded:
                self.finished += 1
            elif result.attempts:
                self.failures += 1
            failures = self.failures
        self.on_event(Event("done" if result.succeeded else "failed", result.task, result))
        if self.max_failures and failures >= self.max_failures and not result.succeeded:
            calls = "call" if failures == 1 else "calls"
            self._halt("max_failures", f"{failures} {calls} failed (--max-failures)")

    def _fail_fast(self, exc: FatalLLMError) -> None:
        with self._lock:
            if self._fatal is None:
                self._fatal = exc
        self._halt("fatal", str(exc))

    def _forget_fatal(self) -> None:
        """A fatal error was raised to the caller, who may have handled it (a merge falling back
        to concatenation): it must not stop the next run. Other halts stay."""
        with self._lock:
            if self.halt is None or self.halt.reason != "fatal":
                return
            self.halt = None
            self._fatal = None
        self._stop.clear()
        self.pacer.reopen()

    def _halt(self, reason: HaltReason, message: str) -> None:
        """Stop starting calls: the first reason wins, except that an interrupt overrides."""
        with self._lock:
            current = self.halt
            if current is not None and (reason != "interrupted" or current.reason == reason):
                return
            self.halt = Halt(reason, message, time.monotonic())
        self._stop.set()
        self.pacer.close()
