"""What the `parallelize batch` commands print: summaries for people, JSON documents for tools.

Everything here may come from a server or a file (ids, statuses, run names, error messages), so
every string is masked and made terminal-safe before it is printed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Collection, Sequence
from typing import Any

from ..engine.batches import Batch
from ..engine.batchimport import ImportReport
from ..masking import for_people, mask, terminal_safe
from .document import SCHEMA_VERSION
from .lines import say


def print_json(document: dict[str, Any]) -> None:
    """A `--format json` document on stdout, masked like every other."""
    sys.stdout.write(mask(json.dumps(document, indent=2, ensure_ascii=False)) + "\n")


def import_document(report: ImportReport) -> dict[str, Any]:
    """`batch import --format json`."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": "batch import",
        "file": str(report.path),
        "lines": report.lines,
        "stored": report.stored,
        "failed": report.failed,
        "unknown": report.unknown,
        "duplicates": report.duplicates,
        "truncated": report.truncated,
        "failures": [
            {"line": f.line, "custom_id": f.custom_id, "reason": f.reason} for f in report.failures
        ],
        "warnings": list(report.warnings),
    }


def print_import(report: ImportReport) -> None:
    """`batch import`'s summary on stderr: the counts, then each failure shown and the advice."""
    counts = [f"stored {report.stored:,}", f"failed {report.failed:,}"]
    counts.append(f"unknown {report.unknown:,}")
    if report.duplicates:
        counts.append(f"duplicates {report.duplicates:,}")
    say(f"{for_people(str(report.path), 300)}: {report.lines:,} line(s): {', '.join(counts)}")
    if report.truncated:
        say(f"warning: {report.truncated:,} stored answer(s) were cut short (finish_reason length)")
    for warning in report.warnings:
        say(f"warning: {warning}")
    for failure in report.failures:
        which = f" ({failure.custom_id[:16]}…)" if failure.custom_id else ""
        say(f"  line {failure.line}{which}: {failure.reason}")
    if report.failed > len(report.failures):
        say(f"  and {report.failed - len(report.failures):,} more failed line(s)")
    if report.unknown:
        say(
            f"warning: {report.unknown:,} line(s) answer calls this cache did not export "
            "(another --cache-dir, endpoint or run?): not stored"
        )
    if report.stored:
        rest = "; the failed ones are sent online, or exported again" if report.failed else ""
        say(f"re-run the same command without --export to use them{rest}")


def print_batches(
    command: str, batches: Sequence[Batch], known: Collection[str], *, as_json: bool, table: bool
) -> None:
    """`batch list|status|cancel` on stdout: a JSON document, the table, or one batch's lines."""
    if as_json:
        print_json(batches_document(command, batches, known))
        return
    text = (
        batch_table(batches, known)
        if table
        else batch_details(batches[0], known=batches[0].id in known)
    )
    sys.stdout.write(text + "\n")


def batch_record(batch: Batch, *, known: bool) -> dict[str, Any]:
    """One batch in `batch list|status|cancel --format json`."""
    return {
        "id": batch.id,
        "status": batch.status,
        "created_at": batch.created_at,
        "expires_at": batch.expires_at,
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "run": batch.run,
        "metadata": dict(batch.metadata),
        "endpoint": batch.endpoint,
        "input_file_id": batch.input_file_id,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "errors": list(batch.errors),
        "known": known,
    }


def batches_document(
    command: str, batches: Sequence[Batch], known: Collection[str]
) -> dict[str, Any]:
    """`batch list|status|cancel --format json`: the batches under a schema version."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "batches": [batch_record(b, known=b.id in known) for b in batches],
    }


def batch_table(batches: Sequence[Batch], known: Collection[str]) -> str:
    """`batch list`: one row a batch, newest first; `*` marks the batches this cache knows."""
    if not batches:
        return "no batches at this endpoint"
    marks = any(b.id in known for b in batches)  # the mark column only when it marks one
    rows = [("", "ID", "STATUS", "CREATED", "DONE/TOTAL", "FAILED", "RUN")]
    for b in batches:
        mark = "*" if b.id in known else ""
        counts = f"{b.completed:,}/{b.total:,}"
        created = _when(b.created_at)
        rows.append((mark, b.id, b.status, created, counts, f"{b.failed:,}", b.run or "-"))
    if not marks:
        rows = [row[1:] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    cells = [[*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]] for row in rows]
    lines = ["  ".join(row) for row in cells]
    text = "\n".join(line.rstrip() for line in lines)
    if marks:
        text += "\n* submitted from this cache"
    return for_people_block(text)


def batch_details(batch: Batch, *, known: bool) -> str:
    """`batch status ID` (and `cancel`): the batch as `key: value` lines."""
    lines = [
        f"id: {batch.id}",
        f"status: {batch.status}",
        f"created: {_when(batch.created_at)}",
        f"expires: {_when(batch.expires_at)}",
        f"requests: {batch.completed:,} completed, {batch.failed:,} failed, {batch.total:,} total",
        f"run: {batch.run or '-'}",
        f"known to this cache: {'yes' if known else 'no'}",
    ]
    for name, value in (
        ("endpoint", batch.endpoint),
        ("input file", batch.input_file_id),
        ("output file", batch.output_file_id),
        ("error file", batch.error_file_id),
    ):
        if value:
            lines.append(f"{name}: {value}")
    lines += [f"error: {reason}" for reason in batch.errors]
    return for_people_block("\n".join(lines))


def for_people_block(text: str) -> str:
    """Several lines, each masked and freed of escape sequences (their spacing kept: the
    server's strings in them were made single safe lines when they were read)."""
    return "\n".join(terminal_safe(mask(line)) for line in text.splitlines())


def _when(stamp: int | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
