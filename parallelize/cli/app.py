"""The `parallelize` app: registers the commands, small ones (recipes, cache) and main().

Heavy modules (httpcore, pydantic, tiktoken) are imported inside the commands so that `--help`
and `--version` start fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated

import typer

from .. import __version__
from ..defaults import default_cache_dir
from .batch import batch_app
from .common import CacheDirOpt, guard, usage_error
from .helpformat import HelpCommand, HelpGroup
from .report import EXAMPLES as REPORT_EXAMPLES
from .report import report
from .section import EXAMPLES as SECTION_EXAMPLES
from .section import section
from .vote import EXAMPLES as VOTE_EXAMPLES
from .vote import vote

app = typer.Typer(
    cls=HelpGroup,
    name="parallelize",
    help="Run identical LLM calls in parallel and aggregate what they return.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,
)


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


# Each command lives in its own module (they import only typer at load time).
app.command(cls=HelpCommand, epilog=SECTION_EXAMPLES)(section)
app.command(cls=HelpCommand, epilog=VOTE_EXAMPLES)(vote)
app.command(cls=HelpCommand, epilog=REPORT_EXAMPLES)(report)


@app.command("recipes", cls=HelpCommand)
def list_recipes() -> None:
    """List the built-in recipes with their descriptions."""

    def job() -> None:
        from ..recipe.load import builtin_recipes, load_recipe  # here: --help stays light

        for name, path in builtin_recipes().items():
            found = load_recipe(path)
            typer.echo(f"{name:<20} {found.mode:<8} {found.description}")

    guard(job)


cache_app = typer.Typer(
    cls=HelpGroup,
    help="Inspect or clear the cache of finished calls.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(cache_app, name="cache")
app.add_typer(batch_app, name="batch")


@cache_app.command("info", cls=HelpCommand)
def cache_info(cache_dir: CacheDirOpt = None) -> None:
    """Show where the call cache is, what it holds and how big it is."""

    def job() -> None:
        from ..engine.cache import CallCache, describe  # here: sqlite3 only when used

        with CallCache(cache_dir or default_cache_dir()) as cache:
            typer.echo(describe(cache.info()))

    guard(job)


@cache_app.command("clear", cls=HelpCommand)
def cache_clear(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Only remove entries not used for this long (e.g. 30d, 12h).",
            show_default=False,
        ),
    ] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Remove cached calls: all of them, or those unused for a while."""
    seconds = None
    if older_than is not None:
        from ..engine.durations import DURATION_EXAMPLES, parse_duration  # only when given

        seconds = parse_duration(older_than)
        if seconds is None:
            usage_error(
                f"--older-than: cannot read '{older_than}' as a duration ({DURATION_EXAMPLES})"
            )

    def job() -> None:
        from ..engine.cache import CallCache  # here: sqlite3 only when used

        with CallCache(cache_dir or default_cache_dir()) as cache:
            removed = cache.clear(older_than=seconds)
            typer.echo(f"removed {removed:,} cached call(s) from {cache.path}", err=True)

    guard(job)


def main() -> None:
    """Console-script entry point: run the app, flush what it printed, and leave at once.

    Every command has closed its files, cache and connections by the time it returns, so the
    interpreter's own teardown (freeing every imported module, about 0.1 s) buys nothing; a
    CI step or a three-sample vote is short enough for that to show.
    """
    # Typer builds its option parsers with pydantic, and pydantic's first model looks for
    # plugins by reading the metadata of every installed distribution (about 10 ms); a CLI has
    # no use for them. PYDANTIC_DISABLE_PLUGINS set by the user still wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        app()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe (`| head`) took all it wanted: no "Exception ignored" noise on exit.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code or 0)
