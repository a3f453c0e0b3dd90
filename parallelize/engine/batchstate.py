"""What a run knows about its batches, kept in the call cache's file (`CallCache` inherits this).

Every step is written before the next is taken, so a run can stop at any moment and a re-run
resumes without submitting a line twice: an uploaded file and the keys it carries are recorded
as an upload (`upload:<file id>`) before the batch is created, and renamed to the batch's id once
it is; an upload left without a batch (a crash in between) is adopted from the server's list of
batches (by the run's metadata and the file id), or dropped when the server never made one.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    run TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    input_file TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_lines (
    batch TEXT NOT NULL,
    key TEXT NOT NULL,
    error TEXT,
    final INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batch_lines_key ON batch_lines (key)
"""
#: The prefix of a batch row whose file is uploaded but whose batch is not (yet) known.
UPLOAD = "upload:"
#: Server states after which a batch changes no more.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: Our own states: collected (its lines are in the cache or failed), lost (404), held (the
#: enqueued-token limit refused it: its lines count as never sent).
DONE = TERMINAL | {"collected", "lost", "held"}
#: Keys per SELECT (SQLite's variable limit is 999 on old builds).
LOOKUP_BATCH = 500


@dataclass(frozen=True)
class LineRecord:
    """One line of one batch: where it went, its batch's state, and why it failed (if it did)."""

    batch: str
    key: str
    state: str
    endpoint: str
    run: str
    error: str | None
    final: bool


@dataclass(frozen=True)
class BatchRecord:
    """One batch as recorded: what `parallelize batch list` shows."""

    id: str
    run: str
    endpoint: str
    model: str
    input_file: str
    state: str
    lines: int
    created: float


class BatchBook:
    """The batch tables of the cache file (mixed into `CallCache`)."""

    _db: sqlite3.Connection
    _lock: threading.Lock
    read_only: bool
    _guard: Callable[[str], AbstractContextManager[None]]

    def record_upload(
        self, file_id: str, *, run: str, endpoint: str, model: str, keys: Sequence[str]
    ) -> str:
        """An uploaded file and its keys, before its batch is created; returns its row id."""
        row_id = UPLOAD + file_id
        now = time.time()
        with self._guard("write"), self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?,?,?)",
                (row_id, run, endpoint, model, file_id, "uploaded", now, now),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO batch_lines (batch, key) VALUES (?,?)",
                [(row_id, key) for key in keys],
            )
        return row_id

    def record_batch(self, row_id: str, batch_id: str, state: str) -> None:
        """The upload `row_id` became the batch `batch_id` (one transaction)."""
        with self._guard("write"), self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE batches SET id = ?, state = ?, updated = ? WHERE id = ?",
                (batch_id, state, time.time(), row_id),
            )
            self._db.execute("UPDATE batch_lines SET batch = ? WHERE batch = ?", (batch_id, row_id))

    def drop_batch(self, row_id: str) -> None:
        """Forget a row and its lines: an upload whose batch was never made, or one refused by
        the enqueued-token limit (its lines were never run)."""
        with self._guard("write"), self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM batch_lines WHERE batch = ?", (row_id,))
            self._db.execute("DELETE FROM batches WHERE id = ?", (row_id,))

    def set_batch_state(self, batch_id: str, state: str) -> None:
        with self._guard("write"), self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE batches SET state = ?, updated = ? WHERE id = ?",
                (state, time.time(), batch_id),
            )

    def fail_lines(self, batch_id: str, failures: Mapping[str, tuple[str, bool]]) -> None:
        """Why lines of a batch failed: key -> (error, final: no resubmission can help)."""
        rows = [(error, int(final), batch_id, key) for key, (error, final) in failures.items()]
        with self._guard("write"), self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE batch_lines SET error = ?, final = ? WHERE batch = ? AND key = ?", rows
            )

    def batch_lines(self, keys: Iterable[str]) -> list[LineRecord]:
        """Every batch line that carried one of `keys`, with its batch's state."""
        wanted = list(keys)
        found: list[LineRecord] = []
        with self._guard("read"):
            for start in range(0, len(wanted), LOOKUP_BATCH):
                part = wanted[start : start + LOOKUP_BATCH]
                rows = self._db.execute(
                    "SELECT l.batch, l.key, b.state, b.endpoint, b.run, l.error, l.final"
                    " FROM batch_lines l JOIN batches b ON b.id = l.batch"
                    f" WHERE l.key IN ({','.join('?' * len(part))})",
                    part,
                ).fetchall()
                found += [LineRecord(*row[:6], bool(row[6])) for row in rows]
        return found

    def line_keys(self, batch_id: str) -> list[str]:
        """The keys a batch carries."""
        with self._guard("read"):
            rows = self._db.execute("SELECT key FROM batch_lines WHERE batch = ?", (batch_id,))
            return [row[0] for row in rows.fetchall()]

    def recorded_batches(self, *, live_only: bool = False) -> list[BatchRecord]:
        """The batches recorded in this file, newest first (uploads without a batch included)."""
        where = f" WHERE state NOT IN ({','.join('?' * len(DONE))})" if live_only else ""
        with self._guard("read"):
            rows = self._db.execute(
                "SELECT id, run, endpoint, model, input_file, state,"
                " (SELECT COUNT(*) FROM batch_lines WHERE batch = batches.id), created"
                f" FROM batches{where} ORDER BY created DESC",
                sorted(DONE) if live_only else [],
            ).fetchall()
        return [BatchRecord(*row) for row in rows]
