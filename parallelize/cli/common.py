"""What every command shares: the engine flags, running with progress, finishing.

Printing goes through `render`; this module only turns results and errors into exit codes.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_USAGE,
    ConfigError,
    EndpointError,
    ParallelizeError,
)
from ..render.lines import print_error, print_notice, say
from .exportflag import ExportOpt, export_flags
from .helpformat import ENGINE
from .options import MaxToolRoundsOpt, ToolConcurrencyOpt, ToolRootOpt, ToolsOpt

if TYPE_CHECKING:
    from ..records import RunResult
    from .options import Format


# Engine options (pacing, cache, limits, prices) shared by every command that calls a model:
# `@engine_options` adds them to a command and hands it their RunOptions fields as `engine`.
RpmOpt = Annotated[
    float | None,
    typer.Option(
        "--rpm",
        metavar="N",
        min=0.001,
        help="Requests per minute never to exceed (default: learn the rate from the server).",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]

TpmOpt = Annotated[
    float | None,
    typer.Option(
        "--tpm",
        metavar="N",
        min=1,
        help="Tokens per minute never to exceed.",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]

NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache", help="Neither reuse nor store finished calls.", rich_help_panel=ENGINE
    ),
]

RefreshOpt = Annotated[
    bool,
    typer.Option(
        "--refresh", help="Make every call again and update the cache.", rich_help_panel=ENGINE
    ),
]

CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        metavar="DIR",
        help="Directory of the call cache (env PARALLELIZE_CACHE_DIR).",
        show_default=False,
        file_okay=False,
        rich_help_panel=ENGINE,
    ),
]

MaxFailuresOpt = Annotated[
    int | None,
    typer.Option(
        "--max-failures",
        metavar="N",
        min=1,
        help="Stop starting calls after N have failed.",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]

DeadlineOpt = Annotated[
    str | None,
    typer.Option(
        "--deadline",
        metavar="DURATION",
        help="Stop starting calls after this long (e.g. 90s, 10m), keep what finished, exit 5.",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]

MaxCostOpt = Annotated[
    float | None,
    typer.Option(
        "--max-cost",
        min=0,
        metavar="USD",
        help="Budget: refuse a run estimated above it; start no call past it (exit 5).",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]

PriceInOpt = Annotated[
    float | None,
    typer.Option(
        "--price-in",
        metavar="USD",
        min=0,
        help="USD per million input tokens (over the built-in table; cached ones too unless "
        "--price-cached-in).",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]

PriceCachedInOpt = Annotated[
    float | None,
    typer.Option(
        "--price-cached-in",
        metavar="USD",
        min=0,
        help="USD per million input tokens the provider's prompt cache served (at most the input "
        "price).",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]

PriceOutOpt = Annotated[
    float | None,
    typer.Option(
        "--price-out",
        metavar="USD",
        min=0,
        help="USD per million output tokens (over the built-in table).",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]

MaxTasksOpt = Annotated[
    int | None,
    typer.Option(
        "--max-tasks",
        metavar="N",
        min=1,
        help="Refuse a run that would make more than N calls (default 100,000; recipe max_tasks).",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]


BatchOpt = Annotated[
    bool,
    typer.Option(
        "--batch",
        help="Send the calls through the provider's Batch API: half the price, answers within "
        "24 h (recipe batch: true).",
        rich_help_panel=ENGINE,
    ),
]

DetachOpt = Annotated[
    bool,
    typer.Option(
        "--detach",
        help="With --batch: submit (or poll once), print the batch ids and exit 6 while any "
        "runs; the same command again resumes.",
        rich_help_panel=ENGINE,
    ),
]

BatchRetriesOpt = Annotated[
    int,
    typer.Option(
        "--batch-retries",
        min=0,
        max=10,
        metavar="N",
        help="With --batch: resubmit failed or expired calls up to N times (default 1).",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]

FinishOnlineOpt = Annotated[
    bool,
    typer.Option(
        "--finish-online",
        help="With --batch: make the calls the batches left failed as online requests.",
        rich_help_panel=ENGINE,
    ),
]


#: The engine flags: parameter name -> (Typer annotation, default).
ENGINE_FLAGS: dict[str, tuple[Any, Any]] = {
    "rpm": (RpmOpt, None),
    "tpm": (TpmOpt, None),
    "no_cache": (NoCacheOpt, False),
    "refresh": (RefreshOpt, False),
    "cache_dir": (CacheDirOpt, None),
    "max_failures": (MaxFailuresOpt, None),
    "deadline": (DeadlineOpt, None),
    "max_cost": (MaxCostOpt, None),
    "price_in": (PriceInOpt, None),
    "price_out": (PriceOutOpt, None),
    "price_cached_in": (PriceCachedInOpt, None),
    "max_tasks": (MaxTasksOpt, None),
    "batch": (BatchOpt, False),
    "detach": (DetachOpt, False),
    "batch_retries": (BatchRetriesOpt, 1),
    "finish_online": (FinishOnlineOpt, False),
    "export": (ExportOpt, None),
}
#: The tool flags, for the commands that take them (`@engine_options(tools=True)`).
TOOL_FLAGS: dict[str, tuple[Any, Any]] = {
    "tools": (ToolsOpt, None),
    "max_tool_rounds": (MaxToolRoundsOpt, None),
    "tool_concurrency": (ToolConcurrencyOpt, None),
    "tool_root": (ToolRootOpt, None),
}


def engine_options(command: Callable[..., None] | None = None, *, tools: bool = False) -> Any:
    """Give a command the engine flags (and the tool flags with `tools`), checked and turned
    into RunOptions fields as `engine`.

    Typer reads a command's options from its signature, so the flags are added to the signature
    here once instead of being declared again by every command that calls a model.
    """
    if command is None:
        return functools.partial(engine_options, tools=tools)
    table = ENGINE_FLAGS | (TOOL_FLAGS if tools else {})
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "engine"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, (kind, default) in table.items()
    ]

    @functools.wraps(command)
    def run(**values: Any) -> None:
        check_finite(values)
        flags = {name: values.pop(name) for name in table}
        command(**values, engine=engine_settings(**flags))

    run.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    return run


def check_finite(values: dict[str, Any]) -> None:
    """Refuse inf and nan in every number flag: `--timeout inf` would never time out."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            usage_error(f"--{name.replace('_', '-')}: {value} is not a finite number")


def engine_settings(
    *,
    rpm: float | None,
    tpm: float | None,
    no_cache: bool,
    refresh: bool,
    cache_dir: Path | None,
    max_failures: int | None,
    deadline: str | None,
    max_cost: float | None,
    price_in: float | None,
    price_out: float | None,
    price_cached_in: float | None,
    max_tasks: int | None,
    batch: bool = False,
    detach: bool = False,
    batch_retries: int = 1,
    finish_online: bool = False,
    export: Path | None = None,
    tools: list[Any] | None = None,
    max_tool_rounds: int | None = None,
    tool_concurrency: int | None = None,
    tool_root: Path | None = None,
) -> dict[str, Any]:
    """The engine flags as RunOptions fields; a bad value is a usage error naming its flag."""
    if no_cache and refresh:
        usage_error("--no-cache and --refresh cannot be combined: --refresh rewrites the cache")
    seconds = None
    if deadline is not None:
        from ..engine.durations import DURATION_EXAMPLES, parse_duration  # only when given

        seconds = parse_duration(deadline)
        if seconds is None or seconds <= 0:
            usage_error(f"--deadline: cannot read '{deadline}' as a duration ({DURATION_EXAMPLES})")
    if price_cached_in is not None and price_in is not None and price_cached_in > price_in:
        usage_error(
            f"--price-cached-in {price_cached_in:g} is above --price-in {price_in:g}: the cached "
            "rate is the discounted one (are the two swapped?)"
        )
    return {
        "rpm": rpm,
        "tpm": tpm,
        "cache": not no_cache,
        "refresh": refresh,
        "cache_dir": cache_dir,
        "max_failures": max_failures,
        "deadline": seconds,
        "max_cost": max_cost,
        "price_in": price_in,
        "price_out": price_out,
        "price_cached_in": price_cached_in,
        # Not an engine setting: each command folds it into the recipe (the plan checks it there).
        "max_tasks": max_tasks,
        "batch": export_flags(export, detach=detach, no_cache=no_cache)
        if export is not None
        else batch_flags(batch, detach, batch_retries, finish_online, no_cache=no_cache),
        "tools": tuple(dict.fromkeys(tool.value for tool in tools or ())),
        "max_tool_rounds": max_tool_rounds,
        "tool_concurrency": tool_concurrency,
        # --tool-root as named; each command settles the root from it and its PATHs.
        "tool_root": str(tool_root.resolve()) if tool_root else None,
    }


def batch_flags(
    batch: bool, detach: bool, retries: int, finish_online: bool, *, no_cache: bool
) -> Any:
    """--batch and its companions as BatchOptions (None: none given; the recipe may still ask)."""
    if not (batch or detach or finish_online or retries != 1):
        return None
    if batch and no_cache:
        usage_error("--batch needs the call cache: it records the batches (drop --no-cache)")
    from ..engine.batchoptions import BatchOptions  # only when given

    return BatchOptions(enabled=batch, detach=detach, retries=retries, finish_online=finish_online)


def run_with_progress(
    runner: Callable[[Any], RunResult],
    *,
    base_url: str | None,
    timeout: float,
    max_retries: int,
    dry_run: bool,
    quiet: bool,
    engine: dict[str, Any] | None = None,
) -> RunResult:
    """Resolve the endpoint, attach a progress reporter, and run."""
    # Imported here, when a command runs: --help loads none of the engine.
    from ..engine.client import Endpoint
    from ..engine.session import RunOptions
    from ..render.terminal import progress_reporter

    engine = {k: v for k, v in (engine or {}).items() if k != "max_tasks"}
    try:  # a dry run asks the endpoint what the run would (window, counts), --base-url's too
        endpoint = Endpoint.resolve(base_url)
    except EndpointError:
        if not dry_run:
            raise
        endpoint = None  # none configured: the dry run plans locally
    with progress_reporter(quiet=quiet or dry_run) as on_event:
        options = RunOptions(
            endpoint=endpoint,
            timeout=timeout,
            max_retries=max_retries,
            dry_run=dry_run,
            on_event=on_event,
            on_notice=lambda message: print_notice(message, quiet=quiet),
            **engine,
        )
        return runner(options)


def finish(
    job: Callable[[], RunResult],
    *,
    fmt: Format,
    output: Path | None,
    quiet: bool,
    verbose: bool = False,
    report: Path | None = None,
    pick: Callable[[RunResult], RunResult] | None = None,
) -> None:
    """Run a command's job, render its result (and its `--report`), and exit with its code;
    `pick` lets a person choose a vote's winner once the candidates are shown."""

    def go() -> int:
        from ..render.github import publish
        from ..render.show import show  # here: --help stays light

        result = job()
        refused: ConfigError | None = None
        try:
            result = show(
                result, fmt=fmt.value, output=output, quiet=quiet, verbose=verbose, pick=pick
            )
        except ConfigError as exc:  # the format refused the finished result (--format sarif):
            refused = exc  # the annotations, step summary and report still show it
        publish(result)  # GitHub Actions only: annotations and the step summary
        if report is not None and not result.dry_run:
            from ..render.report import write_report  # here: Jinja loads only for a report

            write_report(result, report)
        if refused is not None:
            raise refused
        return result.exit_code

    code = guard(go)
    raise typer.Exit(code or 0)


def guard(job: Callable[[], Any]) -> Any:
    """Turn our errors into one line on stderr and the documented exit code."""
    try:
        return job()
    except ParallelizeError as exc:
        if exc.exit_code in (EXIT_INTERRUPTED, EXIT_PENDING, EXIT_OK):  # not errors
            say(str(exc))
        else:
            print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        say("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def usage_error(message: str) -> None:
    """A bad flag or combination: one line naming it, exit 2."""
    print_error(message)
    raise typer.Exit(EXIT_USAGE)
