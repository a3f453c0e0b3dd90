"""`parallelize section`: split the data into chunks, run one prompt on each, combine all."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..defaults import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from ..render.lines import print_notice
from .common import engine_options, finish, run_with_progress, usage_error
from .helpformat import CHUNKING, INPUTS, MERGE, PROMPT
from .options import (
    BaseUrlOpt,
    ConcurrencyOpt,
    DryRunOpt,
    Format,
    FormatOpt,
    MaxTokensOpt,
    ModelOpt,
    OutputOpt,
    QuietOpt,
    RetriesOpt,
    SystemOpt,
    TimeoutOpt,
    VerboseOpt,
)
from .report import ReportOpt, check_report
from .section_flags import chunking_values, input_values, parse_each, read_files_from

if TYPE_CHECKING:
    from ..records import RunResult


class OnSecret(str, Enum):
    redact = "redact"
    fail = "fail"


class Tokenizer(str, Enum):
    o200k = "o200k"
    cl100k = "cl100k"
    estimate = "estimate"
    server = "server"


OverlapOpt = Annotated[
    int | None,
    typer.Option(
        "--overlap",
        min=0,
        max=10_000,
        metavar="LINES",
        help="Repeat the last LINES lines of a split file's previous piece (at most 10,000).",
        show_default=False,
        rich_help_panel=CHUNKING,
    ),
]
IncludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        metavar="GLOB",
        help="Only read files matching GLOB (gitignore syntax; repeatable).",
        show_default=False,
        rich_help_panel=INPUTS,
    ),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        metavar="GLOB",
        help="Skip files and folders matching GLOB (gitignore syntax; repeatable).",
        show_default=False,
        rich_help_panel=INPUTS,
    ),
]
FilesFromOpt = Annotated[
    str | None,
    typer.Option(
        "--files-from",
        metavar="FILE|-",
        help="Also read the paths listed in FILE (one per line, or NUL separated); - is stdin.",
        show_default=False,
        rich_help_panel=INPUTS,
    ),
]
AllowOutsideOpt = Annotated[
    bool,
    typer.Option(
        "--allow-outside",
        help="Read --files-from entries outside the working directory (refused by default).",
        rich_help_panel=INPUTS,
    ),
]
MaxFileBytesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-file-bytes",
        min=1,
        metavar="BYTES",
        help="Skip larger files (default 1 MiB).",
        show_default=False,
        rich_help_panel=INPUTS,
    ),
]
OnSecretOpt = Annotated[
    OnSecret | None,
    typer.Option(
        "--on-secret",
        metavar="redact|fail",
        help="redact (default): send a marker in place of each secret found; "
        "fail: stop before any request.",
        show_default=False,
        rich_help_panel=INPUTS,
    ),
]
AllowSecretsOpt = Annotated[
    bool,
    typer.Option(
        "--allow-secrets",
        help="Send secret files and values as they are (no scan).",
        rich_help_panel=INPUTS,
    ),
]
TokenizerOpt = Annotated[
    Tokenizer | None,
    typer.Option(
        "--tokenizer",
        metavar="|".join(kind.value for kind in Tokenizer),
        help="How tokens are counted (default: the model's tiktoken encoding); "
        "server asks the endpoint's tokenize API.",
        show_default=False,
        rich_help_panel=CHUNKING,
    ),
]
ContextWindowOpt = Annotated[
    int | None,
    typer.Option(
        "--context-window",
        min=256,
        metavar="TOKENS",
        help="The model's context size (default: asked from the server, else a built-in table).",
        show_default=False,
        rich_help_panel=CHUNKING,
    ),
]


class MergeName(str, Enum):
    concat = "concat"
    llm = "llm"
    json = "json"
    files = "files"


class By(str, Enum):
    file = "file"


#: The examples at the end of `section --help`.
EXAMPLES = """
parallelize section src --chunks 4 -p "List the public functions"
parallelize section src -r code-review --include '*.py' --format sarif -o review.sarif
git diff | parallelize section - -p "Explain this change"
parallelize section docs -r translate --each locale=fr-FR,ja-JP --out-dir build/i18n
parallelize section src --chunks 4 --dry-run    # the plan and its cost; no request
"""


@engine_options(tools=True)
def section(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PATH",
            help="Files, directories (recursive), or - for stdin.",
            show_default=False,
        ),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt",
            "-p",
            metavar="TEXT",
            help="Instruction for every chunk; {{ input }} places the chunk.",
            show_default=False,
            rich_help_panel=PROMPT,
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            "-r",
            metavar="NAME|FILE",
            help="Built-in recipe name (see `parallelize recipes`) or a .yaml file.",
            show_default=False,
            rich_help_panel=PROMPT,
        ),
    ] = None,
    chunks: Annotated[
        int | None,
        typer.Option(
            "--chunks",
            "-c",
            min=1,
            metavar="N",
            help="Exactly N balanced chunks.",
            show_default=False,
            rich_help_panel=CHUNKING,
        ),
    ] = None,
    chunk_tokens: Annotated[
        int | None,
        typer.Option(
            "--chunk-tokens",
            min=16,
            metavar="N",
            help="Token budget per request (at least 16).",
            show_default=False,
            rich_help_panel=CHUNKING,
        ),
    ] = None,
    by: Annotated[
        By | None,
        typer.Option(
            "--by",
            metavar="file",
            help="file: one chunk per file.",
            show_default=False,
            rich_help_panel=CHUNKING,
        ),
    ] = None,
    merge: Annotated[
        MergeName | None,
        typer.Option(
            "--merge",
            metavar="|".join(kind.value for kind in MergeName),
            help="How outputs combine: concat, llm (map-reduce), json, files (one per section).",
            show_default=False,
            rich_help_panel=MERGE,
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir",
            metavar="DIR",
            help="Write every section to its own file here (implies --merge files).",
            show_default=False,
            file_okay=False,
            rich_help_panel=MERGE,
        ),
    ] = None,
    each: Annotated[
        list[str] | None,
        typer.Option(
            "--each",
            metavar="VAR=V1,V2",
            help="Clone the run per value: VAR=v1,v2,... (repeat for a product); PATH optional.",
            show_default=False,
            rich_help_panel=PROMPT,
        ),
    ] = None,
    system: SystemOpt = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature",
            "-t",
            min=0,
            max=2,
            metavar="T",
            help="Sampling temperature, 0 to 2 (default: the recipe's, else the server's).",
            show_default=False,
            rich_help_panel=PROMPT,
        ),
    ] = None,
    max_tokens: MaxTokensOpt = None,
    overlap: OverlapOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    files_from: FilesFromOpt = None,
    allow_outside: AllowOutsideOpt = False,
    max_file_bytes: MaxFileBytesOpt = None,
    on_secret: OnSecretOpt = None,
    allow_secrets: AllowSecretsOpt = False,
    tokenizer: TokenizerOpt = None,
    context_window: ContextWindowOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    concurrency: ConcurrencyOpt = None,
    output: OutputOpt = None,
    report: ReportOpt = None,
    fmt: FormatOpt = Format.text,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    max_retries: RetriesOpt = DEFAULT_MAX_RETRIES,
    *,
    engine: dict[str, Any],
) -> None:
    """Split PATH (files, directories or stdin) into chunks, run the same prompt on each in
    parallel, and combine the results."""
    if chunks is not None and (chunk_tokens is not None or by is not None):
        other = "--chunk-tokens" if chunk_tokens is not None else "--by"
        usage_error(f"--chunks and {other} cannot be combined: choose one way to chunk")
    if on_secret is not None and allow_secrets:
        usage_error("--on-secret and --allow-secrets cannot be combined")
    if files_from == "-" and "-" in (paths or []):
        usage_error("--files-from - and PATH - both want stdin: put the list in a file")
    check_report(report, dry_run=dry_run)
    matrix = parse_each(each or [])
    merge_values = {
        "strategy": (merge.value if merge else None) or ("files" if out_dir else None),
        "out_dir": str(out_dir) if out_dir else None,
    }

    def job() -> RunResult:
        # Imported here, in the command: --help loads none of the pipeline.
        from ..recipe.load import DEFAULT_SECTION_RECIPE, override, section_recipe
        from ..run import run_section
        from ..tools.kit import input_root, root_refusal

        base = section_recipe(recipe, prompt=prompt)
        if not recipe and not prompt:
            print_notice(
                f"using the built-in '{DEFAULT_SECTION_RECIPE}' recipe "
                "(pass --prompt or --recipe to choose)",
                quiet=quiet,
            )
        chunking = chunking_values(
            base, chunks=chunks, chunk_tokens=chunk_tokens, by=by and by.value, overlap=overlap
        )
        inputs = input_values(
            base,
            include=include,
            exclude=exclude,
            max_file_bytes=max_file_bytes,
            on_secret="allow" if allow_secrets else on_secret and on_secret.value,
        )
        final = override(
            base,
            {
                "prompt": prompt,
                "system": system,
                "model": model,
                "temperature": temperature,
                "max_tokens": max_tokens,
                "concurrency": concurrency,
                "context_window": context_window,
                "tokenizer": tokenizer and tokenizer.value,
                "merge": {k: v for k, v in merge_values.items() if v is not None} or None,
                "matrix": matrix or None,
                "inputs": inputs,
                "chunking": chunking,
                "max_tasks": engine["max_tasks"],
            },
            replace=("chunking",),
        )
        if fmt is Format.sarif and final.merge.strategy != "json":  # no findings to write
            from ..render.sarif import NO_FINDINGS

            usage_error(NO_FINDINGS)
        if not paths and not files_from and not final.matrix:
            usage_error(
                "missing PATH: give files, directories, or - for stdin (PATH is optional "
                "only with --files-from, --each or a recipe matrix)"
            )
        listed = read_files_from(files_from) if files_from else []
        root = input_root([*(paths or []), *listed], engine["tool_root"])
        refused = root_refusal(
            [*final.tools, *engine["tools"]], root, why="PATH is not one folder or file"
        )
        if refused:
            usage_error(refused)
        return run_with_progress(
            lambda options: run_section(
                paths or [],
                final,
                options=options,
                stdin=sys.stdin,
                files_from=listed,
                output=output,
                allow_outside=allow_outside,
            ),
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            dry_run=dry_run,
            quiet=quiet,
            engine=engine | {"tool_root": root},  # where tools may look
        )

    finish(job, fmt=fmt, output=output, quiet=quiet, verbose=verbose, report=report)
