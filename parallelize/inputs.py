"""Find the input files, read them as text, and count their tokens."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .errors import InputError
from .tokens import TokenCounter

STDIN = "-"
STDIN_NAME = "<stdin>"
#: Directories that hold tool state, never input.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "node_modules", ".tox"})
#: Bytes sniffed to tell binary from text.
SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Document:
    """One input text with the name the model sees for it."""

    path: str
    text: str
    tokens: int


@dataclass
class Discovery:
    """The documents found, plus what was skipped and why (for the summary)."""

    documents: list[Document] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, path: str) -> None:
        self.skipped.setdefault(reason, []).append(path)


def discover(
    paths: Sequence[str],
    *,
    counter: TokenCounter,
    stdin: TextIO | None = None,
) -> Discovery:
    """Read every text file under `paths` (sorted, deterministic); `-` reads stdin."""
    found = Discovery()
    for raw in paths:
        if raw == STDIN:
            text = (stdin or sys.stdin).read()
            found.documents.append(Document(STDIN_NAME, text, counter.count(text)))
            continue
        root = Path(raw)
        if not root.exists():
            raise InputError(f"path not found: {raw}", hint="check the spelling or the directory")
        for path, shown in _walk(root):
            text = _read_text(path, shown, found)
            if text is not None:
                found.documents.append(Document(shown, text, counter.count(text)))
    if not any(doc.text.strip() for doc in found.documents):
        where = ", ".join(paths) or "(nothing)"
        raise InputError(
            f"no readable text files in {where}",
            hint="point PATH at text files, or pipe text with `-`",
        )
    return found


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """Files under root in sorted order with the relative name shown to the model."""
    if root.is_file():
        yield root, root.as_posix()
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath, name)
            yield path, Path(os.path.normpath(path)).as_posix()


def _read_text(path: Path, shown: str, found: Discovery) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        found.skip("unreadable", shown)
        return None
    if b"\0" in data[:SNIFF_BYTES]:
        found.skip("binary", shown)
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        found.skip("undecodable", shown)
        return None
