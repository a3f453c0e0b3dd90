"""`parallelize batch ...`: the provider's batches (list, status, cancel) and, for servers without
a Batch API, `import` of an output file made from `--batch --export FILE`.

The commands only parse and print: the work is in parallelize.engine (batchimport and the Batch
API client), the printing in parallelize.render.batches.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..defaults import default_cache_dir
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CacheError
from .common import CacheDirOpt, guard
from .helpformat import OUTPUT, HelpCommand, HelpGroup
from .options import BaseUrlOpt

if TYPE_CHECKING:
    from ..engine.batches import Batch, Batches


class Format(str, Enum):
    text = "text"
    json = "json"


FormatOpt = Annotated[
    Format,
    typer.Option(
        "--format",
        metavar="text|json",
        help="text: a summary on stderr (default); json: a document on stdout.",
        show_default=False,
        rich_help_panel=OUTPUT,
    ),
]

LIST_EXAMPLES = """
parallelize batch list
parallelize batch list --limit 100 --format json
parallelize batch status batch_abc123
parallelize batch cancel batch_abc123
"""

EXAMPLES = """
parallelize section src/ -p "Summarize" --batch --export requests.jsonl
python tools/realserver/batchrun.py requests.jsonl results.jsonl --base-url $OPENAI_BASE_URL
parallelize batch import results.jsonl
parallelize section src/ -p "Summarize"
"""

batch_app = typer.Typer(
    cls=HelpGroup,
    help="The endpoint's batches (list, status, cancel); import results made elsewhere.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


IdArg = Annotated[
    str,
    typer.Argument(
        metavar="ID", help="The batch's id (batch list shows them).", show_default=False
    ),
]


def _ask(
    command: str,
    base_url: str | None,
    fmt: Format,
    cache_dir: Path | None,
    fetch: Callable[[Batches], list[Batch]],
    *,
    table: bool = False,
) -> None:
    """Ask the endpoint through `fetch` and print what it says (a table for `list`, else one
    batch's details, or JSON), marking the batches this cache knows; errors as one line."""

    def job() -> None:
        from ..render.batches import print_batches

        with _batches(base_url) as remote:
            batches = fetch(remote)
        known = _known_ids(cache_dir)
        print_batches(command, batches, known, as_json=fmt is Format.json, table=table)

    guard(job)


def _known_ids(cache_dir: Path | None) -> set[str]:
    """The batch ids this cache recorded (none when there is no cache or it cannot be read)."""
    from ..engine.cache import CACHE_FILE, CallCache

    directory = cache_dir or default_cache_dir()
    if not (Path(directory).expanduser() / CACHE_FILE).is_file():
        return set()  # no cache yet: nothing to mark, and none made only to look
    try:
        with CallCache(directory) as cache:
            return {b.id for b in cache.recorded_batches()}
    except CacheError:  # marking is a courtesy: a cache that cannot be read marks nothing
        return set()


def _batches(base_url: str | None) -> Batches:
    """The batches of the endpoint (--base-url, else OPENAI_BASE_URL / OpenAI)."""
    from ..engine.batches import Batches
    from ..engine.client import Endpoint

    return Batches(Endpoint.resolve(base_url))


@batch_app.command("list", cls=HelpCommand, epilog=LIST_EXAMPLES)
def batch_list(
    limit: Annotated[
        int,
        typer.Option("--limit", metavar="N", min=1, max=1000, help="Show the newest N batches."),
    ] = 20,
    base_url: BaseUrlOpt = None,
    fmt: FormatOpt = Format.text,
    cache_dir: CacheDirOpt = None,
) -> None:
    """List the endpoint's batches, newest first; * marks those this cache submitted."""
    _ask("batch list", base_url, fmt, cache_dir, lambda r: r.list(limit=limit), table=True)


@batch_app.command("status", cls=HelpCommand, epilog=LIST_EXAMPLES)
def batch_status(
    batch_id: IdArg,
    base_url: BaseUrlOpt = None,
    fmt: FormatOpt = Format.text,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Show one batch: its status, request counts, files and run."""
    _ask("batch status", base_url, fmt, cache_dir, lambda r: [r.get(batch_id)])


@batch_app.command("cancel", cls=HelpCommand, epilog=LIST_EXAMPLES)
def batch_cancel(
    batch_id: IdArg,
    base_url: BaseUrlOpt = None,
    fmt: FormatOpt = Format.text,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Cancel one batch: lines already answered are kept, a re-run resubmits the rest."""
    _ask("batch cancel", base_url, fmt, cache_dir, lambda r: [r.cancel(batch_id)])


@batch_app.command("import", cls=HelpCommand, epilog=EXAMPLES)
def batch_import(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="A Batch API output JSONL whose requests came from --batch --export.",
            show_default=False,
            dir_okay=False,
        ),
    ],
    fmt: FormatOpt = Format.text,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Read a batch output file into the call cache: the same command then runs from the cache."""

    def job() -> int:
        from ..engine.batchimport import import_results  # here: --help stays light
        from ..engine.cache import CallCache
        from ..render.batches import import_document, print_import, print_json

        with CallCache(cache_dir or default_cache_dir()) as cache:
            report = import_results(file, cache)
        if fmt is Format.json:
            print_json(import_document(report))
        print_import(report)
        if report.failed:
            return EXIT_FAILED
        if not report.stored and report.unknown:
            return EXIT_USAGE  # nothing in the file was asked for by this cache
        return EXIT_OK

    raise typer.Exit(guard(job))
