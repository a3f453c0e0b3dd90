"""The library entry points: each runs the pipeline and returns a RunResult, never prints."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from .defaults import DEFAULT_CONCURRENCY, UNKNOWN_MODEL, default_cache_dir
from .engine.client import DEFAULT_OPENAI_MODEL, ChatClient, Endpoint
from .engine.executor import Executor
from .engine.routing import route_models
from .engine.session import (
    RunOptions,
    default_model,
    engine,
    estimate_run,
    open_cache,
    record_engine,
)
from .errors import (
    EXIT_FAILED,
    EXIT_OK,
    CacheError,
    ConfigError,
    ContextOverflowError,
    EndpointError,
    combine_exit_codes,
    first_few,
)
from .inputs.bounds import Bounds, Reserved
from .inputs.read import check_paths
from .inputs.tokens import BYTES_BOUND, TokenCounter, get_counter
from .merge.combine import combine
from .merge.context import MergeContext, json_joiner
from .merge.files import OutputWriter, plan_outputs
from .merge.mapreduce import check_reduce, preview_reduce
from .merge.reduceplan import output_ratio
from .plan.chunking import Chunk
from .plan.exactcounts import ExactCounts
from .plan.healing import Healer, Healing
from .plan.promptcounts import planned_request_tokens
from .plan.sections import (
    Prepared,
    first_pass,
    prepare_section,
    refine_section,
)
from .plan.tasks import SectionTemplate, check_section_template, section_tasks
from .plan.window import ServerFacts, server_facts
from .recipe.model import Recipe
from .records import (
    ChatRequest,
    Event,
    ProgressCallback,
    RunResult,
    Task,
    TaskResult,
    VotePlan,
)


def run_section(
    paths: Sequence[str],
    recipe: Recipe,
    *,
    options: RunOptions | None = None,
    stdin: TextIO | None = None,
    files_from: Sequence[str] = (),
    output: str | Path | None = None,
    allow_outside: bool = False,
) -> RunResult:
    """Split the input into chunks, run the recipe on every chunk in parallel, merge the outputs.

    `files_from` lists more paths (--files-from); the ones that no longer exist are skipped, and
    ones outside the working directory are refused unless `allow_outside`. `output` is the file
    the caller will write the artifact to (-o): checked now, and never read as input.
    """
    options = (options or RunOptions()).for_recipe(recipe)
    started = time.monotonic()
    check_paths(paths)
    _check_out_dir(recipe)
    _check_output(output)
    bounds = _input_bounds(recipe, options, output=output, allow_outside=allow_outside)
    template = check_section_template(recipe)
    endpoint = _endpoint(options)
    model = _section_model(recipe, endpoint)
    needs_counts = options.dry_run or options.max_cost is not None or bool(options.tpm)
    first = first_pass(recipe, endpoint, needs_counts=needs_counts)
    prepared = prepare_section(
        paths,
        template,
        model=model,
        stdin=stdin,
        files_from=files_from,
        bounds=bounds,
        ask_later=first.ask_later,
        count_first=first.count_first,
    )
    tasks = plan_section(template, prepared.plan.chunks, model=model or UNKNOWN_MODEL)
    with ExitStack() as stack:  # the endpoint's counter stays usable while the run lasts
        if endpoint is not None and (model is None or first.ask_later):
            asked = _ask_endpoint(template, prepared, tasks, model, endpoint, options, stack)
            model, prepared, tasks = asked
        if endpoint is None or options.dry_run or model is None:
            dry = RunResult("section", recipe.name, model or "", tasks, dry_run=True)
            dry.merge = _reduce_preview(template, prepared, tasks, model or UNKNOWN_MODEL)
            dry = _with_inputs(dry, prepared)
            count = _request_counter(prepared, tasks)
            return estimate_run(dry, options, count=count)
        result = _execute(template, prepared, tasks, model, replace(options, endpoint=endpoint))
    result.wall_time = time.monotonic() - started
    return result


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
    from .vote.setup import dry_run_notes, planned_calls, prepare_vote
    from .vote.waves import draw_samples

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
            warnings=[*setup.warnings, *dry_run_notes(setup)],
            vote=VotePlan(recipe.vote.strategy, setup.seed, planned_calls(setup)),
        )
        return estimate_run(dry, options)
    with engine(options, concurrency=setup.concurrency) as executor:
        setup.resolve(None if setup.models else default_model(executor.client))
        with route_models(executor, setup.models, timeout=options.timeout):
            drawing = draw_samples(setup, executor)  # all N, or waves with --early-stop
            result = decide(drawing, setup, executor)
    result.wall_time = time.monotonic() - started
    return record_engine(result, executor)


def _section_model(recipe: Recipe, endpoint: Endpoint | None) -> str | None:
    """The model the recipe, the environment or OpenAI's default names (None: ask the server)."""
    model = recipe.model or os.environ.get("PARALLELIZE_MODEL")
    if model is None and endpoint is not None and endpoint.is_openai:
        return DEFAULT_OPENAI_MODEL
    return model


def _endpoint(options: RunOptions) -> Endpoint | None:
    """Where the run goes; a dry run without a configured endpoint plans locally (None)."""
    try:
        return options.endpoint or Endpoint.resolve()
    except EndpointError:
        if options.dry_run:
            return None
        raise


def _ask_endpoint(
    template: SectionTemplate,
    prepared: Prepared,
    tasks: list[Task],
    model: str | None,
    endpoint: Endpoint,
    options: RunOptions,
    stack: ExitStack,
) -> tuple[str | None, Prepared, list[Task]]:
    """The model, plan and tasks after asking the endpoint (metadata and token counts, never a
    chat), or after reading what it said from the cache; the dry run and the run alike.

    A dry run whose endpoint does not answer plans locally and says so.
    """
    client = stack.enter_context(ChatClient(endpoint, timeout=options.timeout))
    store = open_cache(options.cache, options.cache_dir, options.on_notice or (lambda _: None))
    if store is not None:
        stack.enter_context(store)
    chosen, refresh = model, options.refresh
    try:
        chosen = model or default_model(client, store=store, refresh=refresh)
        counts = template.recipe.tokenizer in (None, "server")
        facts = server_facts(client, chosen, store=store, refresh=refresh, count=counts)
        near = client if facts.answered else None
        where = facts.describe()
        refined = refine_section(
            prepared, template, model=chosen, client=near, facts=facts, store=store, where=where
        )
    except EndpointError as exc:
        if not options.dry_run:
            raise
        chosen, facts = model, ServerFacts(answered=False)
        where = facts.describe()
        local = refine_section(
            prepared, template, model=model or UNKNOWN_MODEL, client=None, facts=facts, where=where
        )
        refined = replace(
            local, warnings=[*local.warnings, f"dry run planned locally: {exc.message}"]
        )
    if refined.plan is not prepared.plan or model is None:
        tasks = plan_section(template, refined.plan.chunks, model=chosen or UNKNOWN_MODEL)
    return chosen, refined, tasks


def _execute(
    template: SectionTemplate,
    prepared: Prepared,
    tasks: list[Task],
    model: str,
    options: RunOptions,
) -> RunResult:
    """Run the section tasks, merge their outputs, and report what happened."""
    recipe = template.recipe
    concurrency = recipe.concurrency or min(len(tasks), DEFAULT_CONCURRENCY)
    counts = ExactCounts(prepared, recipe, model, wave=min(concurrency, len(tasks)))
    failed: dict[str, Task] = {}
    on_event = _remember(_listeners(options.on_event, counts.on_event), failed)
    writer = None
    if recipe.merge.strategy == "files" and recipe.merge.out_dir:
        writer = OutputWriter(Path(recipe.merge.out_dir))
        if recipe.guard is None:  # a guarded answer waits for the gate before it is written
            on_event = _listeners(on_event, writer.on_event)
    with engine(replace(options, on_event=on_event), concurrency=concurrency) as executor:
        counts.keep_in(executor.cache)
        try:
            results = executor.run(tasks, keep_overflows=True)
            healing = _heal(template, prepared, model, results, executor, on_event)
            results = healing.results
            context = _merge_context(recipe, prepared, model, executor, writer, results)
            outcome = combine(results, context)
        except ContextOverflowError as exc:
            raise _naming_task(exc, failed.get(str(exc)), prepared, options) from None
        prepared, tasks, results = counts.result(tasks, outcome.results or results)
    if context.plans and "merge" in outcome.details:
        outcome.details["merge"]["plan"] = max(context.plans.values(), key=lambda p: p["calls"])
    result = RunResult(
        "section",
        recipe.name,
        model,
        tasks,
        results,
        output=outcome.text,
        aggregate_calls=outcome.calls,
        warnings=healing.warnings + outcome.warnings,
        merge=outcome.details,
    )
    broken = result.failed or any(not c.succeeded for c in result.aggregate_calls)
    result.exit_code = combine_exit_codes(EXIT_FAILED if broken else EXIT_OK, outcome.exit_code)
    return record_engine(_with_inputs(result, prepared), executor)


def _with_inputs(result: RunResult, prepared: Prepared) -> RunResult:
    """The result with what was read: the inputs report first, its warnings before the rest."""
    result.warnings[:0] = prepared.warnings
    result.inputs = prepared.report()
    return result


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
    exc: ContextOverflowError, task: Task | None, prepared: Prepared, options: RunOptions
) -> ContextOverflowError:
    """The server's context-overflow error with the chunk and files that caused it."""
    hint = exc.hint
    endpoint = options.endpoint
    if prepared.counter.name != "server" and endpoint is not None and not endpoint.is_openai:
        hint = f"{exc.hint}; or --tokenizer server to count as the server does"
    where = ""
    if task is not None:
        named = first_few(task.paths)
        where = f"{task.label} ({named}): " if named else f"{task.label}: "
    return ContextOverflowError(f"{where}{exc.message}", status=exc.status, hint=hint)


def plan_section(template: SectionTemplate, chunks: Sequence[Chunk], *, model: str) -> list[Task]:
    """The section tasks, with each one's output file when the merge writes files; a merge that
    cannot work, or an unsafe or shared output path, fails here, before any request."""
    tasks = section_tasks(template, chunks, model=model)
    recipe = template.recipe
    if recipe.merge.strategy == "llm":
        check_reduce(recipe, model=model)
    if recipe.merge.strategy != "files" or not recipe.merge.out_dir:
        return tasks
    return plan_outputs(recipe, tasks, out_dir=Path(recipe.merge.out_dir))


def _check_out_dir(recipe: Recipe) -> None:
    """`--merge files` writes into a directory: without one, fail before anything is read."""
    if recipe.merge.strategy == "files" and not recipe.merge.out_dir:
        raise ConfigError(
            "--merge files needs an output directory",
            hint="pass --out-dir DIR, or set merge.out_dir in the recipe",
        )


def _check_output(output: str | Path | None) -> None:
    """`-o` must name a file in a folder (or a folder that can be made): fail before anything is
    read or sent. An unwritable folder still fails at the end, with the result on stdout."""
    if output is None:
        return
    target = Path(output)
    if target.is_dir():
        raise ConfigError(f"--output {target} is a directory", hint="name a file to write")
    folder = target.absolute().parent
    while not folder.exists():  # missing folders are created when the result is written
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(
            f"--output {target}: {folder} is not a directory", hint="choose another path"
        )


def _input_bounds(
    recipe: Recipe, options: RunOptions, *, output: str | Path | None, allow_outside: bool
) -> Bounds:
    """Where this run writes (never read as input), and whether listed paths may be outside."""
    reserved = [Reserved(str(output), "--output")] if output is not None else []
    if recipe.merge.strategy == "files" and recipe.merge.out_dir:
        reserved.append(Reserved(recipe.merge.out_dir, "--out-dir"))
    cache = options.cache_dir or default_cache_dir()
    reserved.append(Reserved(str(cache), "--cache-dir"))
    return Bounds(allow_outside=allow_outside, reserved=tuple(reserved))


def _heal(
    template: SectionTemplate,
    prepared: Prepared,
    model: str,
    results: list[TaskResult],
    executor: Executor,
    on_event: ProgressCallback,
) -> Healing:
    """Send the chunks the server refused as too long in parts, and join their answers."""
    if not any(r.overflow for r in results):
        return Healing(results)
    if template.recipe.context_window is None and any(r.overflow and r.attempts for r in results):
        _forget_window(executor, model)  # a new refusal of a window the server told us
    healer = Healer(
        template,
        prepared.plan.chunks,
        model=model,
        counter=prepared.counter,
        join_json=json_joiner(template.recipe),
    )
    healing = healer.heal(results, lambda tasks: executor.run(tasks, keep_overflows=True))
    for healed in healing.healed:  # the chunk's own call finishes now, for progress and files
        on_event(Event("done" if healed.succeeded else "failed", healed.task, healed))
    return healing


def _request_counter(
    prepared: Prepared, tasks: Sequence[Task]
) -> Callable[[ChatRequest], int] | None:
    """The plan's count of each task's whole request (None for a byte bound: the estimate
    counts): made from the counts of the chunks the plan holds, so no text is counted twice."""
    counter = _reduce_counter(prepared)
    if counter is None:
        return None
    planned = planned_request_tokens(tasks, prepared.plan.chunks, counter)
    known: dict[int, int] = {}
    if planned is not None:
        known = {id(t.request): n for t, n in zip(tasks, planned, strict=True)}

    def count(request: ChatRequest) -> int:
        found = known.get(id(request))
        return counter.request_tokens(request.messages) if found is None else found

    return count


def _forget_window(executor: Executor, model: str) -> None:
    """An overflow reply means the remembered window may be stale: the next plan asks again."""
    if executor.cache is not None:
        with contextlib.suppress(CacheError):
            executor.cache.forget_facts(executor.client.endpoint.base_url, model)


def _reduce_counter(prepared: Prepared) -> TokenCounter | None:
    """The run's counter for the reduce tree (None for a byte bound: the model's own)."""
    return None if prepared.counter is BYTES_BOUND else prepared.counter


def _merge_context(
    recipe: Recipe,
    prepared: Prepared,
    model: str,
    executor: Executor,
    writer: OutputWriter | None,
    results: list[TaskResult],
) -> MergeContext:
    """What the merge may use: for a map-reduce, the run's window and counter, and how our
    counter measures the server's output tokens."""
    counter = _reduce_counter(prepared)
    llm = recipe.merge.strategy == "llm"  # only a map-reduce reads the outputs' sizes
    ratio = output_ratio(results, counter or get_counter(model)) if llm else 1.0
    window, source = prepared.window, prepared.window_source
    context = MergeContext(recipe, model, executor, writer=writer, window=window, counter=counter)
    return replace(context, window_source=source, ratio=ratio)


def _reduce_preview(
    template: SectionTemplate, prepared: Prepared, tasks: Sequence[Task], model: str
) -> dict[str, Any]:
    """The map-reduce tree at worst in the run's window, for the dry run."""
    window, source = prepared.window, prepared.window_source
    counter = _reduce_counter(prepared)
    return preview_reduce(
        template.recipe, tasks, model=model, window=(window, source), counter=counter
    )
