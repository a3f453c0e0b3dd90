"""The `parallelize` command: parse options, call the library, hand the result to render.

Heavy modules (httpx, pydantic, tiktoken) are imported inside the commands so that `--help`
and `--version` start fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import __version__
from .errors import EXIT_INTERRUPTED, ParallelizeError

if TYPE_CHECKING:
    from .recipe import Recipe
    from .records import RunResult

app = typer.Typer(
    name="parallelize",
    help="Run identical LLM calls in parallel and aggregate what they return.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,
)


class Format(str, Enum):
    text = "text"
    json = "json"


class MergeName(str, Enum):
    concat = "concat"
    llm = "llm"
    json = "json"
    files = "files"


class By(str, Enum):
    file = "file"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"parallelize {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Fan out identical LLM calls (sections of data, or competing samples), then aggregate."""


# Options shared by every command that calls a model.
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model name (env PARALLELIZE_MODEL).", show_default=False),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="OpenAI-compatible endpoint, e.g. http://localhost:11434/v1 (env OPENAI_BASE_URL).",
        show_default=False,
    ),
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        "-j",
        min=1,
        max=1024,
        help="Parallel calls (default min(tasks, 8)).",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    Format, typer.Option("--format", help="text: the artifact; json: everything.")
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Write the artifact to this file instead of stdout.",
        show_default=False,
        dir_okay=False,
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, notices or summary.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan; make no request.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=1, help="Seconds per request.")]
RetriesOpt = Annotated[int, typer.Option("--max-retries", min=0, help="Retries per call.")]


@app.command()
def section(
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Files, directories (recursive), or - for stdin.", show_default=False),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt",
            "-p",
            help="Instruction for every chunk; {{ input }} places the chunk.",
            show_default=False,
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe", "-r", help="Built-in recipe name or a .yaml file.", show_default=False
        ),
    ] = None,
    chunks: Annotated[
        int | None,
        typer.Option(
            "--chunks", "-c", min=1, help="Exactly N balanced chunks.", show_default=False
        ),
    ] = None,
    chunk_tokens: Annotated[
        int | None,
        typer.Option(
            "--chunk-tokens", min=16, help="Token budget per request.", show_default=False
        ),
    ] = None,
    by: Annotated[
        By | None, typer.Option("--by", help="'file': one chunk per file.", show_default=False)
    ] = None,
    merge: Annotated[
        MergeName | None,
        typer.Option(
            "--merge",
            help="How outputs combine: concat, llm (map-reduce), json, files (one per section).",
            show_default=False,
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir",
            help="Write every section to its own file here (implies --merge files).",
            show_default=False,
            file_okay=False,
        ),
    ] = None,
    each: Annotated[
        list[str] | None,
        typer.Option(
            "--each",
            metavar="VAR=V1,V2",
            help="Clone the run per value: VAR=v1,v2,... (repeat for a product); PATH optional.",
            show_default=False,
        ),
    ] = None,
    system: Annotated[
        str | None, typer.Option("--system", help="System prompt.", show_default=False)
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", "-t", min=0, max=2, show_default=False)
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", min=1, help="Output cap per call.", show_default=False),
    ] = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    concurrency: ConcurrencyOpt = None,
    output: OutputOpt = None,
    fmt: FormatOpt = Format.text,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    timeout: TimeoutOpt = 300.0,
    max_retries: RetriesOpt = 4,
) -> None:
    """Split DATA into chunks, run the same prompt on each in parallel, combine all results."""
    picked = [
        flag
        for flag, v in (("--chunks", chunks), ("--chunk-tokens", chunk_tokens), ("--by", by))
        if v is not None
    ]
    if len(picked) > 1:
        _usage_error(f"{' and '.join(picked)} cannot be combined: choose one way to chunk")
    matrix = _parse_each(each or [])
    merge_values = {
        "strategy": (merge.value if merge else None) or ("files" if out_dir else None),
        "out_dir": str(out_dir) if out_dir else None,
    }

    def job() -> RunResult:
        from .recipe import DEFAULT_SECTION_RECIPE, find_recipe, override
        from .run import run_section

        base = find_recipe(recipe or DEFAULT_SECTION_RECIPE)
        if not recipe and not prompt:
            _notice(
                f"using the built-in '{DEFAULT_SECTION_RECIPE}' recipe "
                "(pass --prompt or --recipe to choose)",
                quiet,
            )
        chunking = {"chunks": chunks, "chunk_tokens": chunk_tokens, "by": by and by.value}
        final = override(
            base,
            {
                "prompt": prompt,
                "system": system,
                "model": model,
                "temperature": temperature,
                "max_tokens": max_tokens,
                "concurrency": concurrency,
                "merge": {k: v for k, v in merge_values.items() if v is not None} or None,
                "matrix": matrix or None,
                "chunking": chunking if any(v is not None for v in chunking.values()) else None,
            },
            replace=("chunking",),
        )
        if not paths and not final.matrix:
            _usage_error(
                "missing PATH: give files, directories, or - for stdin (PATH is optional "
                "only with --each or a recipe matrix)"
            )
        if final.merge.strategy == "files" and not final.merge.out_dir:
            _usage_error("--merge files needs an output directory: pass --out-dir DIR")
        return _run_with_progress(
            lambda options: run_section(paths or [], final, options=options, stdin=sys.stdin),
            recipe=final,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            dry_run=dry_run,
            quiet=quiet,
        )

    _finish(job, fmt=fmt, output=output, quiet=quiet)


@app.command("recipes")
def list_recipes() -> None:
    """List the built-in recipes with their descriptions."""

    def job() -> None:
        from .recipe import builtin_recipes, load_recipe

        for name, path in builtin_recipes().items():
            found = load_recipe(path)
            typer.echo(f"{name:<20} {found.mode:<8} {found.description}")

    _guard(job)


def _run_with_progress(
    runner: Callable[[Any], RunResult],
    *,
    recipe: Recipe,
    base_url: str | None,
    timeout: float,
    max_retries: int,
    dry_run: bool,
    quiet: bool,
) -> RunResult:
    """Resolve the endpoint, attach a progress reporter, and run."""
    from .client import Endpoint
    from .render import progress_reporter
    from .run import RunOptions

    endpoint = None if dry_run else Endpoint.resolve(base_url)
    with progress_reporter(quiet=quiet or dry_run) as on_event:
        options = RunOptions(
            endpoint=endpoint,
            timeout=timeout,
            max_retries=max_retries,
            dry_run=dry_run,
            on_event=on_event,
        )
        return runner(options)


def _parse_each(values: list[str]) -> dict[str, list[str]]:
    """`--each locale=fr-FR,de-DE` flags as a matrix (one variable per flag)."""
    matrix: dict[str, list[str]] = {}
    for value in values:
        name, sep, items = value.partition("=")
        name = name.strip()
        listed = [item.strip() for item in items.split(",") if item.strip()]
        if not sep or not name or not listed:
            _usage_error(f"--each: expected VAR=v1,v2,... (got '{value}')")
        if name in matrix:
            _usage_error(f"--each: '{name}' is given twice; list all its values in one flag")
        matrix[name] = listed
    return matrix


def _finish(job: Callable[[], RunResult], *, fmt: Format, output: Path | None, quiet: bool) -> None:
    """Run a command's job, render its result, and exit with its code."""

    def go() -> int:
        from .render import emit, print_summary, print_vote_report, print_warnings

        result = job()
        print_warnings(result, quiet=quiet)
        guard = result.details.get("guard") or {}
        if guard.get("flagged"):
            typer.echo(f"flagged: {guard['reason']} (the answer was withheld)", err=True)
        emit(result, fmt=fmt.value, output=output)
        if not result.dry_run:
            if result.command == "vote":
                print_vote_report(result, quiet=quiet)
            print_summary(result, quiet=quiet)
        return result.exit_code

    code = _guard(go)
    raise typer.Exit(code or 0)


def _guard(job: Callable[[], Any]) -> Any:
    """Turn our errors into one line on stderr and the documented exit code."""
    try:
        return job()
    except ParallelizeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _notice(message: str, quiet: bool) -> None:
    if not quiet:
        typer.echo(message, err=True)


def _usage_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def main() -> None:
    """Console-script entry point."""
    app()


# Commands kept in their own modules register themselves on `app` (they import only typer).
from . import cli_vote  # noqa: E402, F401  (imported for its side effect: the vote command)
