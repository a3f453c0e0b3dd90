"""The `section` options for inputs, secrets, tokens and chunking, and how they become recipe keys.

Kept apart from cli.py so the command module stays small; like cli.py it imports only typer at
module level, so `--help` stays fast.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from .recipe import Recipe


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
        help="Repeat the last L lines of a split file's previous piece.",
        show_default=False,
    ),
]
IncludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        metavar="GLOB",
        help="Only read files matching GLOB (gitignore syntax; repeatable).",
        show_default=False,
    ),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        metavar="GLOB",
        help="Skip files and folders matching GLOB (gitignore syntax; repeatable).",
        show_default=False,
    ),
]
FilesFromOpt = Annotated[
    str | None,
    typer.Option(
        "--files-from",
        metavar="FILE|-",
        help="Also read the paths listed in FILE (one per line, or NUL separated); - is stdin.",
        show_default=False,
    ),
]
MaxFileBytesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-file-bytes", min=1, help="Skip larger files (default 1 MiB).", show_default=False
    ),
]
OnSecretOpt = Annotated[
    OnSecret | None,
    typer.Option(
        "--on-secret",
        help="redact (default): send a marker in place of each secret found; "
        "fail: stop before any request.",
        show_default=False,
    ),
]
AllowSecretsOpt = Annotated[
    bool,
    typer.Option("--allow-secrets", help="Send secret files and values as they are (no scan)."),
]
TokenizerOpt = Annotated[
    Tokenizer | None,
    typer.Option(
        "--tokenizer",
        help="How tokens are counted (default: the model's tiktoken encoding); "
        "server asks the endpoint's tokenize API.",
        show_default=False,
    ),
]
ContextWindowOpt = Annotated[
    int | None,
    typer.Option(
        "--context-window",
        min=256,
        help="The model's context size (default: asked from the server, else a built-in table).",
        show_default=False,
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="List skipped files and every redaction.")
]

#: The ways to chunk: a flag for one of them replaces the recipe's choice.
CHUNKING_MODES = ("chunks", "chunk_tokens", "by")


def chunking_values(
    base: Recipe,
    *,
    chunks: int | None,
    chunk_tokens: int | None,
    by: str | None,
    overlap: int | None,
) -> dict[str, Any] | None:
    """The recipe's `chunking:` with the flags applied (None: no flag given)."""
    mode = {"chunks": chunks, "chunk_tokens": chunk_tokens, "by": by}
    given = {k: v for k, v in mode.items() if v is not None}
    if not given and overlap is None:
        return None
    values = base.chunking.model_dump(exclude_defaults=True)
    if given:  # a mode flag replaces the recipe's way to chunk; its overlap carries over
        values = {k: v for k, v in values.items() if k not in CHUNKING_MODES} | given
    if overlap is not None:
        values["overlap"] = overlap
    return values


def input_values(
    base: Recipe,
    *,
    include: list[str] | None,
    exclude: list[str] | None,
    max_file_bytes: int | None,
    on_secret: str | None,
) -> dict[str, Any] | None:
    """The recipe's `inputs:` with the flags applied; globs from flags add to the recipe's."""
    values = {
        "include": [*base.inputs.include, *include] if include else None,
        "exclude": [*base.inputs.exclude, *exclude] if exclude else None,
        "max_file_bytes": max_file_bytes,
        "on_secret": on_secret,
    }
    return {k: v for k, v in values.items() if v is not None} or None


def read_files_from(source: str) -> list[str]:
    """The paths listed by --files-from: a file, or stdin for `-`."""
    from .errors import InputError
    from .inputs import read_path_list

    if source == "-":
        return read_path_list(sys.stdin.buffer.read())
    try:
        with open(source, "rb") as handle:
            return read_path_list(handle.read())
    except OSError as exc:
        raise InputError(f"--files-from: cannot read {source}: {exc.strerror}") from None
