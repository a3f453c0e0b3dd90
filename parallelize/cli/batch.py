"""`parallelize batch ...`: the provider's batches (list, status, cancel) and, for servers without
a Batch API, `import` of an output file made from `--batch --export FILE`.

The commands only parse and print: the work is in parallelize.engine (batchimport and the Batch
API client), the printing in parallelize.render.batches.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..defaults import default_cache_dir
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .common import CacheDirOpt, guard
from .helpformat import OUTPUT, HelpCommand, HelpGroup


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
