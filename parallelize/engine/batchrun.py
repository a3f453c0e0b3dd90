"""One Executor.run() through the Batch API: submit what the cache does not answer, wait, collect.

Each call the cache does not answer becomes one line (batchfiles.py), files are uploaded and
batches created (batchapi.py), every step recorded in the cache file first (batchstate.py). The
batches are polled with a growing wait until they end; their output goes into the call cache as
if the calls had been made online (the same reply parser), so a re-run, the merge and the vote
read it unchanged. Lines that failed for a reason another try may cure (expired, cancelled, a
5xx) are submitted again up to --batch-retries times, or left to the online path with
--finish-online; a vanished batch's lines are submitted once more. Multi-stage commands (a
vote's judge, a map-reduce merge's levels) call the executor once per stage: one batch each.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    BatchesPending,
    BudgetError,
    ConfigError,
    ContextOverflowError,
    InterruptedRun,
    LLMError,
    first_few,
)
from ..masking import for_people
from ..records import ChatRequest, Completion, TaskResult
from .batchapi import BatchAPI, BatchAPIError
from .batchcollect import collect
from .batchfiles import Line, write_inputs
from .batchstate import TERMINAL, UPLOAD, LineRecord
from .client import CONTEXT_OVERFLOW, encode_body

if TYPE_CHECKING:
    from .cache import CallCache
    from .executor import Executor
    from .queue import WorkQueue

#: The metadata key naming the run on the provider's side (what a re-run adopts by).
RUN_KEY = "parallelize_run"
#: Our batch states for which the server has nothing more to say.
SETTLED = frozenset({"collected", "lost", "held"})
#: Seconds between the checks for an interrupt while waiting for the next poll.
TICK = 0.1


def run_id(keys: Sequence[str | None]) -> str:
    """The run's name at the provider: a hash of every call of this stage, cached or not, so the
    same command finds it again however much of it is done."""
    text = "\n".join(sorted(k for k in keys if k))
    return "pz-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def run_batch(executor: Executor, work: WorkQueue, pending: list[int]) -> list[int]:
    """Settle the pending tasks through batches (answered, or failed for good); returns those
    left to the online path (--finish-online)."""
    cache = executor.cache
    if cache is None or cache.read_only:
        raise ConfigError(
            "--batch needs a writable call cache: it records the batches and keeps their answers",
            hint="drop --no-cache (or use a cache this parallelize can write)",
        )
    if executor.batch.export is not None:  # written for another runner: the run stops here
        from .batchexport import export_pending

        export_pending(cache, work, pending, executor.batch.export)
    requests: dict[str, ChatRequest] = {}
    for index in pending:
        key = work.keys[index]
        if key is not None:
            requests.setdefault(key, work.tasks[index].request)
    runner = BatchRunner(executor, cache, requests, run_id(work.keys))
    try:
        runner.run()
    finally:
        runner.close()
    results: dict[int, TaskResult] = {}
    for index in pending:
        key = work.keys[index]
        task = work.tasks[index]
        if key in runner.completions:
            completion = runner.completions[key]
            executor.ledger.settle(0.0, task.request.model, completion.usage, batch=True)
            results[index] = TaskResult(task, completion, attempts=1)
            executor.batched.append(results[index])
        elif key in runner.failures and not runner.options.finish_online:
            error = runner.failures[key]
            overflow = isinstance(error, ContextOverflowError)
            if overflow and not executor._keep_overflows:  # fails the run as online would
                executor._fail_fast(error)
            results[index] = TaskResult(task, error=str(error), attempts=1, overflow=overflow)
    for index, result in results.items():
        work.results[index] = result
        executor._finish(result)  # counts and progress events, as for an online call
    return [i for i in pending if work.results[i] is None]


class BatchRunner:
    """One stage's batches, from submission to collection, recorded as it goes."""

    def __init__(
        self, executor: Executor, cache: CallCache, requests: dict[str, ChatRequest], run: str
    ) -> None:
        assert executor.batch is not None
        self.executor = executor
        self.options = executor.batch
        self.cache = cache
        self.requests = requests
        self.run_name = run
        self.completions: dict[str, Completion] = {}
        self.failures: dict[str, LLMError] = {}
        self.apis: dict[str, BatchAPI] = {}
        self.folder = cache.path.parent / "batches"
        #: The enqueued-token limit's message, while it refuses new batches.
        self.held: str | None = None
        self._counts: tuple[int, int, int] | None = None
        #: Lines an earlier run failed: this run gets tries of its own, as an online re-run
        #: retries failed calls (--detach counts every poll's, so a loop of polls ends).
        self._earlier = (
            set()
            if self.options.detach
            else {(r.batch, r.key) for r in cache.batch_lines(list(requests)) if r.error}
        )
        self.warned: set[str] = set()

    def close(self) -> None:
        for api in self.apis.values():
            api.close()

    def notice(self, message: str) -> None:
        self.executor.notice(message)

    def run(self) -> None:
        """Submit, poll and collect until every line is answered or failed for good."""
        waits = self.options.waits()
        while True:
            self._adopt_uploads()
            records = self._records()
            todo = [key for key in self._open() if self._submittable(records.get(key, []))]
            if todo and self.held is None:
                self._submit(todo)
                records = self._records()
            live = sorted({r.batch for rs in records.values() for r in rs if self._live(r)})
            if not live:
                if todo and self.held is not None:
                    raise LLMError(
                        f"the provider refused the batch: {self.held}",
                        retryable=False,
                        hint="run the same command again later: nothing is lost, only the "
                        "calls not yet answered are submitted",
                    )
                self._settle(records)
                return
            endpoints = {r.batch: r.endpoint for rs in records.values() for r in rs}
            for batch_id in live:
                self._poll(batch_id, endpoints[batch_id])
            if any(self._live(r) for r in self._flat(self._records())):
                if self.options.detach:
                    self._detach()
                self._wait(next(waits))

    # ---- what is known ----

    def _open(self) -> list[str]:
        return [k for k in self.requests if k not in self.completions and k not in self.failures]

    def _records(self) -> dict[str, list[LineRecord]]:
        found: dict[str, list[LineRecord]] = {}
        for record in self.cache.batch_lines(self._open()):
            found.setdefault(record.key, []).append(record)
        return found

    @staticmethod
    def _flat(records: dict[str, list[LineRecord]]) -> list[LineRecord]:
        return [r for rs in records.values() for r in rs]

    @staticmethod
    def _live(record: LineRecord) -> bool:
        return record.state not in SETTLED and not record.batch.startswith(UPLOAD)

    def _submittable(self, records: list[LineRecord]) -> bool:
        """Never sent, or failed for a curable reason with tries left (a vanished batch's
        lines get one more)."""
        records = [r for r in records if (r.batch, r.key) not in self._earlier]
        if any(self._live(r) or r.final or r.batch.startswith(UPLOAD) for r in records):
            return False
        failed = [r for r in records if r.error]  # a line answered before is no try
        lost = min(1, sum(r.state == "lost" for r in failed))
        return len(failed) < 1 + self.options.retries + lost

    def _settle(self, records: dict[str, list[LineRecord]]) -> None:
        """The lines no batch answered: each fails with the reason its last batch gave."""
        for key in self._open():
            tried = records.get(key, [])
            reasons = [r.error for r in tried if r.error]
            why = reasons[-1] if reasons else "no batch answered it"
            final = any(r.final for r in tried)
            message = for_people(why, 300)
            if CONTEXT_OVERFLOW.search(message):  # healed (split) as an online overflow is
                self.failures[key] = ContextOverflowError(message)
                continue
            again = "run without --detach" if self.options.detach else "a re-run"
            ours = sum((r.batch, r.key) not in self._earlier for r in tried)
            tries = "" if final else f" (after {ours} batch(es) in this run)"
            tries += f"; {again} submits it once more"
            self.failures[key] = LLMError(message + tries, retryable=False)

    # ---- submitting ----

    def api(self, endpoint: str) -> BatchAPI:
        """The Files and Batch APIs of one endpoint (kept open for the stage)."""
        if endpoint not in self.apis:
            client = self.executor.client
            known = client.endpoint
            if known.base_url != endpoint:
                found = [
                    client.endpoint_for(r)
                    for r in self.requests.values()
                    if client.endpoint_for(r).base_url == endpoint
                ]
                known = found[0] if found else known
            self.apis[endpoint] = BatchAPI(known, pause=self._wait)  # its retries stop on ^C
        return self.apis[endpoint]

    def _submit(self, keys: list[str]) -> None:
        by_endpoint: dict[str, list[str]] = {}
        for key in keys:
            endpoint = self.executor.client.endpoint_for(self.requests[key]).base_url
            by_endpoint.setdefault(endpoint, []).append(key)
        for endpoint, group in by_endpoint.items():
            api = self.api(endpoint)
            lines = (
                Line(endpoint, self.requests[k].model, k, encode_body(self.requests[k].body()))
                for k in group
            )
            files = write_inputs(lines, self.folder / self.run_name, url=api.line_url)
            for file in files:
                try:
                    self._create(api, file.path, endpoint, file.model, file.keys)
                finally:
                    file.path.unlink(missing_ok=True)

    def _create(
        self, api: BatchAPI, path: Path, endpoint: str, model: str, keys: list[str]
    ) -> None:
        file_id = api.upload(path)
        row = self.cache.record_upload(
            file_id, run=self.run_name, endpoint=endpoint, model=model, keys=keys
        )
        try:
            batch = api.create(file_id, {RUN_KEY: self.run_name})
        except BatchAPIError as exc:
            self.cache.drop_batch(row)
            if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                raise ConfigError(f"the Batch API refused the batch: {exc.message}") from None
            raise
        batch_id = str(batch.get("id"))
        self.cache.record_batch(row, batch_id, str(batch.get("status") or "validating"))
        with self.executor._lock:  # the executor's counters: each line is one request
            self.executor.attempts += len(keys)
        self.notice(f"batch {batch_id}: {len(keys)} call(s) of {model} submitted")

    def _adopt_uploads(self) -> None:
        """Uploads recorded without their batch (a crash in between): adopt the batch the server
        made for the file, or forget the upload when it made none."""
        uploads = {
            r.batch: r for r in self.cache.batch_lines(self._open()) if r.batch.startswith(UPLOAD)
        }
        if not uploads:
            return
        by_endpoint: dict[str, dict[str, LineRecord]] = {}
        for row_id, record in uploads.items():
            by_endpoint.setdefault(record.endpoint, {})[row_id.removeprefix(UPLOAD)] = record
        for endpoint, files in by_endpoint.items():
            for batch in self.api(endpoint).list():
                file_id = batch.get("input_file_id")
                metadata = batch.get("metadata") or {}
                record = files.get(str(file_id))
                if record is None or metadata.get(RUN_KEY) != record.run:
                    continue
                batch_id = str(batch.get("id"))
                self.cache.record_batch(record.batch, batch_id, str(batch.get("status")))
                self.notice(f"batch {batch_id}: adopted (created before the last run stopped)")
                del files[str(file_id)]
            for file_id in files:
                self.cache.drop_batch(UPLOAD + file_id)

    # ---- polling and collecting ----

    def _poll(self, batch_id: str, endpoint: str) -> None:
        batch = self.api(endpoint).get(batch_id)
        if batch is None:
            keys = self.cache.line_keys(batch_id)
            self.cache.fail_lines(batch_id, {k: ("its batch vanished (404)", False) for k in keys})
            self.cache.set_batch_state(batch_id, "lost")
            self.notice(
                f"warning: batch {batch_id} vanished at the provider (404): its {len(keys)} "
                "call(s) are submitted once more"
            )
            return
        status = str(batch.get("status"))
        self.cache.set_batch_state(batch_id, status)
        self._progress(batch)
        if status in TERMINAL:
            collect(self, batch_id, endpoint, batch)

    def _progress(self, batch: dict[str, Any]) -> None:
        counts = batch.get("request_counts") or {}
        figures = tuple(int(counts.get(n) or 0) for n in ("completed", "failed", "total"))
        if figures != self._counts:
            self._counts = figures
            done, failed, total = figures
            failing = f", {failed} failed" if failed else ""
            self.notice(
                f"batch {batch.get('id')}: {batch.get('status')}, {done} of {total} done{failing}"
            )

    # ---- waiting ----

    def _detach(self) -> None:
        live = sorted({r.batch for r in self._flat(self._records()) if self._live(r)})
        done = len(self.requests) - len(self._open())
        raise BatchesPending(
            f"batches pending: {first_few(live, 10)} ({done} of {len(self.requests)} call(s) "
            "answered); run the same command again to collect them"
        )

    def _wait(self, seconds: float) -> None:
        """Sleep until the next poll, stopping at once on an interrupt or the deadline."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.executor._signals:  # SIGINT/SIGTERM (Executor.interrupt)
                live = sorted({r.batch for r in self._flat(self._records()) if self._live(r)})
                raise InterruptedRun(
                    f"interrupted: the batches {first_few(live, 10)} keep running at the "
                    "provider; run the same command again to collect them"
                )
            if self.executor.deadline is not None and time.monotonic() >= self.executor.deadline:
                live = sorted({r.batch for r in self._flat(self._records()) if self._live(r)})
                raise BudgetError(
                    f"the deadline (--deadline) passed while the batches {first_few(live, 10)} "
                    "run at the provider; run the same command again to collect them"
                )
            time.sleep(min(TICK, max(0.0, end - time.monotonic())))
