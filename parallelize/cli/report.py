"""`parallelize report`: a saved run (`--format json`) as a web page or Markdown; and `--report`,
the option `section` and `vote` share to write the same report right after a run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .common import guard, usage_error
from .helpformat import OUTPUT

EXAMPLES = """
parallelize section src/ -r code-review --format json -o run.json --report review.html
parallelize report run.json -o review.html
parallelize report run.json -o comment.md
parallelize vote "Name the bug" -n 5 --format json | parallelize report - > vote.html
"""

ReportOpt = Annotated[
    Path | None,
    typer.Option(
        "--report",
        metavar="FILE",
        help="Also write a report of the run: FILE.html (a self-contained web page) or FILE.md "
        "(Markdown for a pull-request comment).",
        show_default=False,
        dir_okay=False,
        rich_help_panel=OUTPUT,
    ),
]


def check_report(report: Path | None, *, dry_run: bool) -> None:
    """Refuse a `--report` that cannot be written, before the run spends anything."""
    if report is None:
        return
    from ..render.reportview import FLAVOURS  # here: --help stays light

    if dry_run:
        usage_error("--report shows a run's results: a dry run has none (drop one of the two)")
    if report.suffix.lower() not in FLAVOURS:
        usage_error(f"--report {report}: name the file .html for a web page or .md for Markdown")


def report(
    run: Annotated[
        str,
        typer.Argument(
            metavar="RUN",
            help="A run's document, as written by --format json; - reads stdin.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the report to FILE.html (a web page) or FILE.md (Markdown); "
            "default: HTML on stdout.",
            show_default=False,
            dir_okay=False,
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    markdown: Annotated[
        bool,
        typer.Option(
            "--markdown",
            help="Markdown on stdout instead of HTML (without -o).",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
) -> None:
    """Render a saved run (--format json) as a self-contained HTML page or as Markdown."""
    if markdown and output is not None:
        usage_error("--markdown is for stdout: with -o the file's suffix (.html or .md) decides")

    def job() -> None:
        from ..masking import register_secret
        from ..render.report import report_file  # here: Jinja loads only for a report

        # A document saved by an older version, or by hand, is masked against today's key too.
        register_secret(os.environ.get("OPENAI_API_KEY"))
        report_file(run, output=output, markdown=markdown)

    guard(job)
