"""What the `parallelize batch` commands print: summaries for people, JSON documents for tools.

Everything here may come from a server or a file (ids, statuses, run names, error messages), so
every string is masked and made terminal-safe before it is printed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..engine.batchimport import ImportReport
from ..masking import for_people, mask
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
