"""The options every command that calls a model shares: model, endpoint, output, timeouts.

Each is declared once, with its metavar and the --help heading it belongs under; the engine flags
(pacing, cache, budgets, prices) are common.py's table, added to every command by one decorator.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..defaults import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from .helpformat import ENGINE, OUTPUT, PROMPT, TOOLS


class Format(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"


# Options shared by every command that calls a model.
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="MODEL",
        help="Model name (env PARALLELIZE_MODEL).",
        show_default=False,
        rich_help_panel=PROMPT,
    ),
]

BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        metavar="URL",
        help="OpenAI-compatible endpoint, e.g. http://localhost:11434/v1 (env OPENAI_BASE_URL).",
        show_default=False,
        rich_help_panel=PROMPT,
    ),
]

ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        "-j",
        min=1,
        max=1024,
        metavar="N",
        help="Parallel calls, 1 to 1024 (default min(tasks, 8)).",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]

FormatOpt = Annotated[
    Format,
    typer.Option(
        "--format",
        metavar="|".join(kind.value for kind in Format),
        help="text: the artifact (default); json: everything; sarif: a review's findings "
        "(SARIF 2.1.0).",
        show_default=False,
        rich_help_panel=OUTPUT,
    ),
]

OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write the artifact to this file instead of stdout.",
        show_default=False,
        dir_okay=False,
        rich_help_panel=OUTPUT,
    ),
]

SystemOpt = Annotated[
    str | None,
    typer.Option(
        "--system",
        metavar="TEXT",
        help="System prompt.",
        show_default=False,
        rich_help_panel=PROMPT,
    ),
]

MaxTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--max-tokens",
        min=1,
        metavar="N",
        help="Output cap per call (max_tokens).",
        show_default=False,
        rich_help_panel=PROMPT,
    ),
]

QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress, notices or summary.", rich_help_panel=OUTPUT),
]

VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="List every skipped file and redaction, and every name a summary line folds.",
        rich_help_panel=OUTPUT,
    ),
]

DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Print the plan; make no request.", rich_help_panel=OUTPUT),
]

TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=1,
        metavar="SECONDS",
        help=f"Seconds per request, at least 1 (default {DEFAULT_TIMEOUT:g}).",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]

RetriesOpt = Annotated[
    int,
    typer.Option(
        "--max-retries",
        min=0,
        metavar="N",
        help=f"Retries per call (default {DEFAULT_MAX_RETRIES}).",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]


class BuiltinTool(str, Enum):
    fs = "fs"


# Tool flags: the recipe's tools: and max_tool_rounds keys, and the pool their calls run on.
ToolsOpt = Annotated[
    list[BuiltinTool] | None,
    typer.Option(
        "--tools",
        metavar="|".join(kind.value for kind in BuiltinTool),
        help="Offer built-in tools to the worker calls, added to the recipe's tools: (fs: "
        "read_file, list_dir and search under the input root). Repeatable.",
        show_default=False,
        rich_help_panel=TOOLS,
    ),
]

MaxToolRoundsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-tool-rounds",
        min=1,
        max=100,
        metavar="N",
        help="Tool rounds per call before it must answer (default: the recipe's, else 8).",
        show_default=False,
        rich_help_panel=TOOLS,
    ),
]

ToolRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--tool-root",
        metavar="DIR",
        exists=True,
        file_okay=False,
        dir_okay=True,
        help="The folder tools may read (default: PATH when it is one folder, a single file's "
        "own folder; needed for fs with several paths, stdin or vote).",
        show_default=False,
        rich_help_panel=TOOLS,
    ),
]

ToolConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--tool-concurrency",
        min=1,
        max=4096,
        metavar="N",
        help="Tool calls that run at once across the run (default 3x --concurrency).",
        show_default=False,
        rich_help_panel=TOOLS,
    ),
]
