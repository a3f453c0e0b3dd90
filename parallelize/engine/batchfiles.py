"""Batch input files written line by line to disk, within the provider's limits, and output files
read back line by line: neither is ever held in memory whole.

One line per call: `custom_id` is the call's cache key, `body` the exact online request body
(`ChatRequest.body`, encoded as the client encodes it). One model per file (OpenAI refuses a
file that mixes them), at most MAX_LINES lines and MAX_BYTES bytes.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: OpenAI's limits for one batch input file.
MAX_LINES = 50_000
MAX_BYTES = 200_000_000


@dataclass
class InputFile:
    """One JSONL file to upload: its endpoint and model, and the keys of its lines in order."""

    path: Path
    endpoint: str
    model: str
    keys: list[str] = field(default_factory=list)
    size: int = 0


@dataclass(frozen=True)
class Line:
    """One call to submit: where it goes, its key and its encoded request body."""

    endpoint: str
    model: str
    key: str
    body: bytes


def write_inputs(
    lines: Iterable[Line],
    directory: Path,
    *,
    url: str,
    max_lines: int = MAX_LINES,
    max_bytes: int = MAX_BYTES,
) -> list[InputFile]:
    """Write the lines into files of one endpoint and model each, within the limits."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    prefix = ('{"method":"POST","url":' + json.dumps(url) + ',"custom_id":').encode()
    done: list[InputFile] = []
    open_files: dict[tuple[str, str], tuple[InputFile, IO[bytes]]] = {}
    numbers = itertools.count(1)
    try:
        for line in lines:
            record = prefix + json.dumps(line.key).encode() + b',"body":' + line.body + b"}\n"
            group = (line.endpoint, line.model)
            current = open_files.get(group)
            if current is not None and (
                len(current[0].keys) >= max_lines or current[0].size + len(record) > max_bytes
            ):
                current[1].close()
                done.append(current[0])
                current = None
            if current is None:
                path = directory / f"batch-{next(numbers)}.jsonl"
                info = InputFile(path, line.endpoint, line.model)
                current = info, path.open("wb")
                open_files[group] = current
            info, out = current
            out.write(record)
            info.keys.append(line.key)
            info.size += len(record)
    finally:
        for info, out in open_files.values():
            out.close()
            done.append(info)
    return [f for f in done if f.keys]


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of an output or error file, one line at a time (bad lines skipped)."""
    with path.open("rb") as source:
        for raw in source:
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record
