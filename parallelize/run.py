"""The library entry points: each runs the pipeline and returns a RunResult, never prints."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from .defaults import DEFAULT_CONCURRENCY
from .engine.client import DEFAULT_OPENAI_MODEL, ChatClient, Endpoint
from .engine.routing import route_models
from .engine.session import (
    RunOptions,
    default_model,
    engine,
    estimate_plan,
    record_engine,
)
from .errors import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigError,
    ContextOverflowError,
    combine_exit_codes,
)
from .inputs.read import check_paths
from .merge.combine import combine
from .merge.context import MergeContext
from .plan.chunking import Chunk
from .plan.sections import (
    ExactCounts,
    prepare_section,
    refine_section,
)
from .plan.tasks import section_tasks
from .recipe.model import Recipe
from .records import Event, ProgressCallback, RunResult, Task


def run_section(
    paths: Sequence[str],
    recipe: Recipe,
    *,
    options: RunOptions | None = None,
    stdin: TextIO | None = None,
    files_from: Sequence[str] = (),
) -> RunResult:
    """Split the input into chunks, run the recipe on every chunk in parallel, merge the outputs.

    `files_from` lists more paths (--files-from); the ones that no longer exist are skipped.
    """
    options = (options or RunOptions()).for_recipe(recipe)
    started = time.monotonic()
    model = recipe.model or os.environ.get("PARALLELIZE_MODEL")
    check_paths(paths)
    endpoint = None if options.dry_run else (options.endpoint or Endpoint.resolve())
    if model is None and endpoint is not None and endpoint.is_openai:
        model = DEFAULT_OPENAI_MODEL
    # The server may know a different context window or count differently: then a chunk that
    # does not fit the table's window is judged after asking it (still before any chat request).
    ask_later = endpoint is not None and (
        recipe.tokenizer == "server" or not (recipe.context_window or endpoint.is_openai)
    )
    # Token counts are needed before the first request only to estimate (a dry run, a budget)
    # or to pace tokens; otherwise small files are planned on their byte lengths.
    count_first = endpoint is None or options.max_cost is not None or bool(options.tpm)
    prepared = prepare_section(
        paths,
        recipe,
        model=model,
        stdin=stdin,
        files_from=files_from,
        ask_later=ask_later,
        count_first=count_first,
    )
    # Built before any request: bad templates, unsafe or shared output paths fail here.
    tasks = plan_section(recipe, prepared.plan.chunks, model=model or "(default model)")
    if endpoint is None:
        dry = RunResult(
            "section",
            recipe.name,
            model or "",
            tasks,
            dry_run=True,
            warnings=prepared.warnings,
            details=prepared.details(),
        )
        return estimate_plan(dry, options.price_book(), options.max_cost)
    if model is None or ask_later:  # ask the endpoint (metadata only) before any chat request
        with ChatClient(endpoint, timeout=options.timeout) as meta:
            known = model
            model = model or default_model(meta)
            refined = refine_section(prepared, recipe, model=model, client=meta)
        if refined.plan is not prepared.plan or known is None:
            tasks = plan_section(recipe, refined.plan.chunks, model=model)
        prepared = refined
    concurrency = recipe.concurrency or min(len(tasks), DEFAULT_CONCURRENCY)
    counts = ExactCounts(prepared, recipe, model, wave=min(concurrency, len(tasks)))
    failed: dict[str, Task] = {}
    forward = _listeners(options.on_event, counts.on_event)
    options = replace(options, endpoint=endpoint, on_event=_remember(forward, failed))
    writer = None
    if recipe.merge.strategy == "files" and recipe.merge.out_dir:
        from .merge.files import OutputWriter

        writer = OutputWriter(Path(recipe.merge.out_dir))
        if recipe.guard is None:  # a guarded answer waits for the gate before it is written
            options = replace(options, on_event=_listeners(options.on_event, writer.on_event))
    with engine(options, concurrency=concurrency) as executor:
        try:
            results = executor.run(tasks)
            outcome = combine(results, MergeContext(recipe, model, executor, writer=writer))
        except ContextOverflowError as exc:
            guess = prepared.counter.name != "server" and not endpoint.is_openai
            hint = (
                f"{exc.hint}; or --tokenizer server to count as the server does" if guess else None
            )
            raise _naming_task(exc, failed.get(str(exc)), hint=hint) from None
    prepared = counts.result(tasks)
    result = RunResult(
        "section",
        recipe.name,
        model,
        tasks,
        outcome.results or results,
        output=outcome.text,
        aggregate_calls=outcome.calls,
        wall_time=time.monotonic() - started,
        warnings=prepared.warnings + outcome.warnings,
        details={**prepared.details(), **outcome.details},
    )
    broken = result.failed or any(not c.succeeded for c in result.aggregate_calls)
    result.exit_code = combine_exit_codes(EXIT_FAILED if broken else EXIT_OK, outcome.exit_code)
    return record_engine(result, executor)


def run_vote(
    task: str | None,
    recipe: Recipe,
    *,
    options: RunOptions | None = None,
) -> RunResult:
    """Run N attempts at one task in parallel (spread over the models), then pick ONE best.

    Configuration mistakes raise ConfigError; a vote without a winner is a RunResult whose
    exit_code says why (3: no consensus or all rejected; 1: too few candidates or no usable
    verdict; 2: the judge or scorer calls cannot work, e.g. an unknown model), candidates kept.
    """
    # Imported here: a section run never loads the voting machinery (its pydantic models).
    from .vote.decide import decide
    from .vote.setup import planned_calls, prepare_vote

    options = (options or RunOptions()).for_recipe(recipe)
    started = time.monotonic()
    setup = prepare_vote(task, recipe, env_model=os.environ.get("PARALLELIZE_MODEL"))
    if options.dry_run:
        setup.resolve(None)
        dry = RunResult(
            "vote",
            recipe.name,
            ", ".join(m.name for m in setup.models),
            setup.tasks,
            dry_run=True,
            warnings=setup.warnings,
            details={
                "strategy": recipe.vote.strategy,
                "seed": setup.seed,
                "planned_calls": planned_calls(setup),
            },
        )
        return estimate_plan(dry, options.price_book(), options.max_cost)
    with engine(options, concurrency=setup.concurrency) as executor:
        setup.resolve(None if setup.models else default_model(executor.client))
        with route_models(executor, setup.models, timeout=options.timeout):
            results = executor.run(setup.tasks)
            result = decide(results, setup, executor)
    result.wall_time = time.monotonic() - started
    return record_engine(result, executor)


def _listeners(*callbacks: ProgressCallback | None) -> ProgressCallback:
    """One progress callback that calls each given one in turn."""
    chosen = [c for c in callbacks if c is not None]

    def call(event: Event) -> None:
        for callback in chosen:
            callback(event)

    return call


def _remember(forward: ProgressCallback | None, failed: dict[str, Task]) -> ProgressCallback:
    """Pass events on, remembering which task each error came from (to name it later)."""

    def on_event(event: Event) -> None:
        if event.kind == "failed" and event.result is not None and event.result.error:
            failed.setdefault(event.result.error, event.task)
        if forward is not None:
            forward(event)

    return on_event


def _naming_task(
    exc: ContextOverflowError, task: Task | None, *, hint: str | None = None
) -> ContextOverflowError:
    """The server's context-overflow error with the chunk and files that caused it."""
    where = ""
    if task is not None:
        paths = list(task.meta.get("paths", []))
        named = ", ".join(paths[:3]) + (f" (+{len(paths) - 3} more)" if len(paths) > 3 else "")
        where = f"{task.label} ({named}): " if named else f"{task.label}: "
    return ContextOverflowError(f"{where}{exc.message}", status=exc.status, hint=hint or exc.hint)


def plan_section(recipe: Recipe, chunks: Sequence[Chunk], *, model: str) -> list[Task]:
    """The section tasks, with each one's output file when the merge writes files; a merge that
    cannot work fails here, before any worker call is paid for."""
    tasks = section_tasks(recipe, chunks, model=model)
    if recipe.merge.strategy == "llm":
        from .merge.mapreduce import check_reduce

        check_reduce(recipe, model=model)
    if recipe.merge.strategy != "files":
        return tasks
    if not recipe.merge.out_dir:
        raise ConfigError(
            "--merge files needs an output directory",
            hint="pass --out-dir DIR, or set merge.out_dir in the recipe",
        )
    from .merge.files import plan_outputs

    return plan_outputs(recipe, tasks, out_dir=Path(recipe.merge.out_dir))
