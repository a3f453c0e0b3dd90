"""`parallelize batch import FILE`: a Batch API output JSONL read into the call cache.

Each line is `{id, custom_id, response: {status_code, request_id, body}, error}` (OpenAI's
shape, which tools/realserver/batchrun.py also writes for servers without a Batch API). The
custom_id is the call's cache key; a 200 body goes through the one reply parser (reply.py), so an
imported answer is stored exactly as the online call would have stored it, and the same command
run again answers from the cache. Only keys this cache exported are stored (batchexport.py);
others are counted as unknown. A line refused as longer than the context window is remembered
as such, so the re-run splits that chunk as an online run would. Every size is bounded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CacheError, ConfigError, InputError, LLMError
from ..masking import for_people
from .batchexport import ExportedCall, ExportMemory
from .cache import CallCache
from .client import CONTEXT_OVERFLOW
from .overflows import OverflowMemory
from .reply import parse_completion

#: Bounds on an output file: ten full batches of lines, a generous reply per line.
MAX_IMPORT_LINES = 500_000
MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_IMPORT_BYTES = 4 * 1024 * 1024 * 1024
#: Failures kept by name in the report (the counts cover the rest).
FAILURES_SHOWN = 20


@dataclass(frozen=True)
class ImportFailure:
    """One line that stored nothing, and why."""

    line: int
    custom_id: str | None
    reason: str


@dataclass
class ImportReport:
    """What an import did: counts, the first failures, and warnings from the replies."""

    path: Path
    lines: int = 0
    stored: int = 0
    failed: int = 0
    unknown: int = 0
    duplicates: int = 0
    truncated: int = 0
    failures: list[ImportFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def fail(self, line: int, custom_id: str | None, reason: str) -> None:
        self.failed += 1
        if len(self.failures) < FAILURES_SHOWN:
            self.failures.append(ImportFailure(line, custom_id, reason))


def import_results(path: Path, cache: CallCache) -> ImportReport:
    """Store every answered line of `path` whose key this cache exported; report the rest."""
    expected = ExportMemory(cache.path.parent).recall()
    if not expected:
        raise ConfigError(
            f"the cache {cache.path} has exported no calls to import",
            hint="run the command with --batch --export FILE first, with the same --cache-dir",
        )
    if cache.read_only:
        raise CacheError(f"{cache.warning}", hint="upgrade parallelize to import into this cache")
    report = ImportReport(path)
    overflows = OverflowMemory(cache.path.parent)
    seen: set[str] = set()
    for number, raw in _read_lines(path):
        report.lines += 1
        _import_line(number, raw, expected, seen, cache, overflows, report)
    cache.flush()
    return report


def _read_lines(path: Path) -> Any:
    """(line number, bytes) for each non-blank line, within the bounds (InputError beyond)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_IMPORT_BYTES:
            raise InputError(
                f"{path} is {size / 1e9:.1f} GB, more than an import reads "
                f"({MAX_IMPORT_BYTES / 1e9:.1f} GB)",
                hint="import the batches' output files one at a time",
            )
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(f"{path}:{number}: a line longer than {MAX_LINE_BYTES:,} bytes")
            if number > MAX_IMPORT_LINES:
                raise InputError(
                    f"{path}: more than {MAX_IMPORT_LINES:,} lines",
                    hint="import the batches' output files one at a time",
                )
            if raw.strip():
                yield number, raw


def _import_line(
    number: int,
    raw: bytes,
    expected: dict[str, ExportedCall],
    seen: set[str],
    cache: CallCache,
    overflows: OverflowMemory,
    report: ImportReport,
) -> None:
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError):
        report.fail(number, None, "not JSON")
        return
    key = line.get("custom_id") if isinstance(line, dict) else None
    if not isinstance(key, str) or not key:
        report.fail(number, None, "no custom_id: not a Batch API output line")
        return
    call = expected.get(key)
    if call is None:
        report.unknown += 1
        return
    if key in seen:
        report.duplicates += 1
        return
    seen.add(key)
    response = line.get("response")
    status = response.get("status_code") if isinstance(response, dict) else None
    body = response.get("body") if isinstance(response, dict) else None
    if line.get("error") is not None or status != 200 or not isinstance(body, dict):
        reason = _failure(line.get("error"), status, body)
        report.fail(number, key, reason)
        if status in (400, 413, 422) and CONTEXT_OVERFLOW.search(reason):
            overflows.remember(key, reason)
        return
    try:
        completion = parse_completion(
            json.dumps(body).encode(),
            status=200,
            headers={},
            latency=0.0,
            model=call.model,
            tools_offered=call.tools,
        )
    except LLMError as exc:
        report.fail(number, key, exc.message)
        return
    for warning in completion.warnings:
        if warning not in report.warnings:
            report.warnings.append(warning)
    cache.put(key, completion)
    report.stored += 1
    report.truncated += completion.truncated


def _failure(error: Any, status: Any, body: Any) -> str:
    """The line's error as one safe line: the Batch API's error object, or the reply's."""
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        text = ": ".join(str(p) for p in (code, message) if p)
        return for_people(text or json.dumps(error)) or "an error"
    if error is not None:
        return for_people(str(error)) or "an error"
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        detail = detail.get("message") or detail
    words = for_people(detail if isinstance(detail, str) else json.dumps(detail)) if detail else ""
    if not isinstance(status, int):
        return "no response and no error: not a Batch API output line"
    return f"HTTP {status}: {words}" if words else f"HTTP {status}"
