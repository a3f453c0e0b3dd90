"""The calls a `--batch --export FILE` run wrote out, remembered beside the call cache.

`parallelize batch import` stores a result only for a key this cache exported: an output file
from another cache, endpoint or run cannot slip answers in under keys nobody asked for, and the
import knows each key's model and whether the request offered tools (the reply parser needs
both). One JSON line per exported call, appended, readable by its owner only; entries older
than EXPORT_TTL are ignored (a batch window is 24 hours; a self-hosted runner may take longer).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: The file beside the call cache.
EXPORT_FILE = "exports.jsonl"
#: Seconds an exported call stays importable.
EXPORT_TTL = 30 * 24 * 3600.0
#: Bytes of the memory read at most (about a million exported calls): older lines beyond it are
#: forgotten rather than read without bound.
MAX_MEMORY_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class ExportedCall:
    """What the import needs to know about one exported call."""

    key: str
    model: str
    tools: bool = False


class ExportMemory:
    """The keys exported from this cache directory, with each call's model."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory).expanduser() / EXPORT_FILE

    def remember(self, calls: Iterable[ExportedCall]) -> int:
        """Append the calls (one write per call batch); returns how many were recorded."""
        now = round(time.time())
        lines = [
            json.dumps({"key": c.key, "model": c.model, "tools": c.tools, "at": now}) + "\n"
            for c in calls
        ]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        try:
            os.write(fd, "".join(lines).encode())
        finally:
            os.close(fd)
        return len(lines)

    def recall(self) -> dict[str, ExportedCall]:
        """Every call exported within EXPORT_TTL: key -> call (the newest line of a key wins)."""
        try:
            with self.path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > MAX_MEMORY_BYTES:  # the newest lines: the tail of the file
                    handle.seek(size - MAX_MEMORY_BYTES)
                    handle.readline()  # a torn first line
                data = handle.read(MAX_MEMORY_BYTES)
        except OSError:
            return {}
        fresh = time.time() - EXPORT_TTL
        known: dict[str, ExportedCall] = {}
        for line in data.decode("utf-8", "replace").splitlines():
            try:
                entry = json.loads(line)
                if float(entry["at"]) >= fresh:
                    key = str(entry["key"])
                    known[key] = ExportedCall(key, str(entry["model"]), bool(entry.get("tools")))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a torn, foreign or stale line: ignored
        return known

    def forget(self) -> None:
        """Forget every export (`cache clear`)."""
        self.path.unlink(missing_ok=True)
