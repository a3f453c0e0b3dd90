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
import secrets
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CallsExported, InputError
from ..records import ChatRequest
from .batchfiles import MAX_BYTES, MAX_LINES, Line, write_inputs
from .client import encode_body

if TYPE_CHECKING:
    from .cache import CallCache
    from .queue import WorkQueue

#: The file beside the call cache.
EXPORT_FILE = "exports.jsonl"
#: Seconds an exported call stays importable.
EXPORT_TTL = 30 * 24 * 3600.0
#: The endpoint every exported line is for (a self-hosted server's path).
CHAT_URL = "/v1/chat/completions"
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


@dataclass(frozen=True)
class Export:
    """What `--export FILE` wrote."""

    path: Path
    lines: int
    bytes: int

    def warning(self) -> str | None:
        """Said when one Batch API file could not take it all (a self-hosted runner can)."""
        if self.lines <= MAX_LINES and self.bytes <= MAX_BYTES:
            return None
        return (
            f"{self.path} has {self.lines:,} lines ({self.bytes / 1e6:.0f} MB): a Batch API takes "
            f"at most {MAX_LINES:,} lines and {MAX_BYTES // 10**6} MB a file; split it before "
            "uploading it to one"
        )


def export_calls(
    path: Path, calls: Sequence[tuple[str, ChatRequest]], *, memory: ExportMemory
) -> Export:
    """Write the (key, request) calls as one batch input JSONL (the submission's own line
    writer, batchfiles.py; one file whatever the models), complete or not at all, then remember
    their keys for the import."""
    target = Path(path)
    scratch = target.absolute().parent / f".{target.name}.{secrets.token_hex(6)}.parts"
    lines = (Line(CHAT_URL, r.model, key, encode_body(r.body())) for key, r in calls)
    try:
        parts = write_inputs(
            lines, scratch, url=CHAT_URL, max_lines=sys.maxsize, max_bytes=sys.maxsize
        )
        joined = scratch / "export.jsonl"
        with joined.open("wb") as out:  # one part per model: joined in order
            for part in parts:
                with part.path.open("rb") as source:
                    shutil.copyfileobj(source, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(joined, target)
    except OSError as exc:
        raise InputError(
            f"--export {target}: cannot write it: {exc.strerror or exc}",
            hint="name a file in a folder you can write",
        ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    memory.remember(
        ExportedCall(key, request.model, bool(request.params.get("tools")))
        for key, request in calls
    )
    return Export(target, len(calls), sum(p.size for p in parts))


def export_pending(cache: CallCache, work: WorkQueue, pending: Sequence[int], path: Path) -> None:
    """--export FILE: write the calls the cache does not answer, then stop the run (exit 0)."""
    calls: dict[str, ChatRequest] = {}
    for index in pending:
        key = work.keys[index]
        if key is not None:
            calls.setdefault(key, work.tasks[index].request)
    export = export_calls(path, list(calls.items()), memory=ExportMemory(cache.path.parent))
    cached = len(work.tasks) - len(pending)
    answered = f" ({cached:,} answered by the cache)" if cached else ""
    too_big = export.warning()
    raise CallsExported(
        f"exported {export.lines:,} call(s) to {export.path}{answered}: answer them "
        "(tools/realserver/batchrun.py posts each line to a self-hosted server), "
        "`parallelize batch import RESULTS`, then run this command again without --export"
        + (f"\nwarning: {too_big}" if too_big else "")
    )
