"""The tokenizer's counts of a plan proven with byte lengths (`--by file`, every file one
chunk): made while the first calls are in flight, or read from the call cache, for the summary
and the JSON report (the plan itself stands)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING

from ..inputs.keptcounts import keep_counts, kept_counts
from ..inputs.read import recount, replace_documents
from ..inputs.tokens import BYTES_BOUND, CountStore, for_model, lazy_counter, local_encoding
from ..recipe.model import Recipe
from ..records import Task, TaskResult
from .sections import Prepared
from .window import choose_counter

if TYPE_CHECKING:
    from ..records import Event


def count_exactly(
    prepared: Prepared, recipe: Recipe, model: str | None, *, store: CountStore | None = None
) -> Prepared:
    """A plan proven with byte lengths, with its documents counted by the tokenizer (the plan
    itself stands: every file is one chunk). Counts kept in `store` by an earlier run are
    used as they are (no tokenizer is loaded); new ones are kept there."""
    if prepared.counter is not BYTES_BOUND:
        return prepared
    documents = prepared.discovery.documents
    texts = [doc.text for doc in documents]
    encoding = local_encoding(model, recipe.tokenizer)
    known = kept_counts(store, encoding, texts) if encoding else None
    if known is not None:
        counter = for_model(lazy_counter(model, recipe.tokenizer), model)
        counted = [
            replace(doc, tokens=n, segments=(), marks=())
            for doc, n in zip(documents, known, strict=True)
        ]
    else:
        counter = choose_counter(recipe.tokenizer, model, None)
        counted = recount(documents, counter)
        if encoding is not None and counter.name == encoding:  # not the estimate's counts
            keep_counts(store, encoding, texts, [doc.tokens for doc in counted])
    found = replace_documents(prepared.discovery, counted)
    notes = [counter.note] if counter.note else []
    return replace(prepared, discovery=found, counter=counter, warnings=notes + prepared.warnings)


class ExactCounts:
    """The tokenizer's counts for a plan proven with byte lengths, made while calls are in flight.

    Loading the tokenizer takes about 0.15 s, most of it holding the GIL. It starts once the
    first wave of calls has been sent (every worker is then waiting for the server), so it
    delays no request; a run whose calls were all cached counts when it ends.
    """

    def __init__(self, prepared: Prepared, recipe: Recipe, model: str | None, *, wave: int) -> None:
        self._prepared = prepared
        self._count = functools.partial(count_exactly, prepared, recipe, model)
        self._store: CountStore | None = None
        self._wave = wave
        self._started = 0
        self._future: Future[Prepared] | None = None
        self._lock = threading.Lock()

    def keep_in(self, store: CountStore | None) -> None:
        """Where the counts are looked up and kept (the call cache), once it is open."""
        self._store = store

    def on_event(self, event: Event) -> None:
        if event.kind != "start" or self._prepared.counter is not BYTES_BOUND:
            return
        with self._lock:
            self._started += 1
            if self._started == self._wave:
                self._begin()

    def result(
        self, tasks: list[Task], results: list[TaskResult]
    ) -> tuple[Prepared, list[Task], list[TaskResult]]:
        """The counted plan, and the tasks and results with each section's tokenizer count."""
        if self._prepared.counter is not BYTES_BOUND:
            return self._prepared, tasks, results
        with self._lock:
            future = self._future
            if future is None:  # no wave of calls started it (all cached): count on this thread
                self._future = Future()
        counted = self._count(store=self._store) if future is None else future.result()
        tokens = {d.path: d.tokens for d in counted.discovery.documents}
        done: dict[int, Task] = {}  # a result's task is mostly one of the tasks: replaced once

        def counted_task(task: Task) -> Task:
            if id(task) not in done:
                done[id(task)] = _with_counts(task, tokens)
            return done[id(task)]

        tasks = [counted_task(task) for task in tasks]
        results = [replace(r, task=counted_task(r.task)) for r in results]
        return counted, tasks, results

    def _begin(self) -> Future[Prepared]:
        if self._future is None:
            self._future = future = Future()

            def count() -> None:
                try:
                    future.set_result(self._count(store=self._store))
                except BaseException as exc:  # handed to the caller of result()
                    future.set_exception(exc)

            threading.Thread(target=count, name="parallelize-count", daemon=True).start()
        return self._future


def _with_counts(task: Task, tokens: Mapping[str, int]) -> Task:
    """The task with its section's tokens summed from its files' counts."""
    section = task.section
    if section is None or not section.paths:
        return task
    counted = sum(tokens.get(path, 0) for path in section.paths)
    return replace(task, source=replace(section, tokens=counted))
