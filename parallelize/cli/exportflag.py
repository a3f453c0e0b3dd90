"""`--export FILE` on section and vote: the calls written for another runner (a self-hosted
server has no Batch API), answered later through `parallelize batch import`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import EXIT_USAGE
from ..render.lines import print_error
from .helpformat import ENGINE

if TYPE_CHECKING:
    from ..engine.batchoptions import BatchOptions

ExportOpt = Annotated[
    Path | None,
    typer.Option(
        "--export",
        metavar="FILE",
        help="Write the calls the cache does not answer to FILE as batch input JSONL and exit 0 "
        "(implies --batch); `parallelize batch import` reads the answers back.",
        show_default=False,
        dir_okay=False,
        rich_help_panel=ENGINE,
    ),
]


def export_flags(export: Path, *, detach: bool, no_cache: bool) -> BatchOptions:
    """--export FILE (implies --batch) as BatchOptions: it submits nothing, so detaches nothing."""
    if detach:
        _usage("--export writes the calls to a file and submits nothing: drop --detach")
    if no_cache:
        _usage("--export needs the call cache: the import stores the answers in it")
    from ..engine.batchoptions import BatchOptions  # only when given

    return BatchOptions(enabled=True, export=export)


def _usage(message: str) -> None:
    print_error(message)
    raise typer.Exit(EXIT_USAGE)
