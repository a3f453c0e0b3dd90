"""Command-line values for a section: chunking and input flags over a recipe, `--files-from`,
`--each VAR=v1,v2`. Each turns flags into recipe values or a one-line usage error naming the flag.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .common import usage_error

if TYPE_CHECKING:
    from ..recipe.model import Recipe

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
    from ..inputs.read import read_path_list  # here: --help stays light

    if source == "-":
        return read_path_list(sys.stdin.buffer.read())
    try:
        with open(source, "rb") as handle:
            return read_path_list(handle.read())
    except OSError as exc:
        raise InputError(f"--files-from: cannot read {source}: {exc.strerror}") from None


def parse_each(values: list[str]) -> dict[str, list[str]]:
    """`--each locale=fr-FR,de-DE` flags as a matrix (one variable per flag)."""
    matrix: dict[str, list[str]] = {}
    for value in values:
        name, sep, items = value.partition("=")
        name = name.strip()
        listed = [item.strip() for item in items.split(",") if item.strip()]
        if not sep or not name or not listed:
            usage_error(f"--each: expected VAR=v1,v2,... (got '{value}')")
        if name in matrix:
            usage_error(f"--each: '{name}' is given twice; list all its values in one flag")
        matrix[name] = listed
    return matrix
