"""SQLite store of finished calls, keyed by a hash of the request: re-runs and resumes read it.

It also remembers what endpoints said about themselves (model list, context window, tokenizer:
`facts`, for FACTS_TTL) and the token counts of their tokenizers by text hash, so a dry run, the
run and a re-run plan from the same facts, and a fully cached re-run needs no server. The file
carries its schema version (`PRAGMA user_version`): an older file is migrated in place in one
transaction, a newer one is read but never written.

Each finished call is committed within milliseconds, so an interrupted run loses nothing it paid
for: a writer thread commits whatever finished meanwhile in one transaction (64 workers finishing
together wait for none of it, where a commit each queued them one behind the other), and closing
the cache (or `flush`) waits until everything handed over is on disk. WAL and a busy timeout
let several processes (parallel CI jobs) share one file. The key hashes the endpoint, model,
messages, the parameters that shape the answer and the sample index; never the API key, timeouts
or retry settings. Errors are never stored; truncated replies are, flagged as such.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CacheError
from ..masking import mask
from ..records import ChatRequest, Completion, Usage
from .batchstate import BATCH_SCHEMA, BatchBook
from .durations import format_duration
from .facts import FACTS_SCHEMA, KnownFacts
from .overflows import OverflowMemory
from .reply import tool_call_from

CACHE_FILE = "calls.sqlite3"
#: Bumped when the key recipe changes, so old entries are never misread.
KEY_VERSION = 1
#: The file's layout (`PRAGMA user_version`): 0 is the calls table alone (files written before
#: the version was kept), 1 adds `facts` and `token_counts`, 2 the calls' `cached_tokens`, 3 the
#: Batch API's `batches` and `batch_lines` (batchstate.py).
SCHEMA_VERSION = 3
#: Seconds a writer waits for another process's lock before giving up.
BUSY_TIMEOUT = 30.0
#: Keys per SELECT when looking many up at once (SQLite's variable limit is 999 on old builds).
LOOKUP_BATCH = 500
#: Request fields that do not change the answer, so they stay out of the key.
NOT_IN_KEY = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier", "prompt_cache_key"}
)

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    tool_calls TEXT,
    truncated INTEGER NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL,
    cached_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS calls_used ON calls (used);
"""
    + FACTS_SCHEMA
    + ";"
    + BATCH_SCHEMA
)
#: Columns named, so a row never depends on the order a migration left the table's columns in.
INSERT_CALL = (
    "INSERT OR REPLACE INTO calls (key, model, text, finish_reason, prompt_tokens,"
    " completion_tokens, tool_calls, truncated, created, used, cached_tokens)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)


def request_key(base_url: str, request: ChatRequest, *, api_version: str | None = None) -> str:
    """The cache key of a request: what decides its answer, hashed; never credentials."""
    params = {k: v for k, v in request.params.items() if k not in NOT_IN_KEY}
    identity = {
        "v": KEY_VERSION,
        "endpoint": base_url.rstrip("/"),
        "api_version": api_version,
        "model": request.model,
        "messages": [dict(m) for m in request.messages],
        "params": params,
        "sample": request.sample,
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CacheInfo:
    """What `parallelize cache info` shows."""

    path: Path
    entries: int
    truncated: int
    size_bytes: int
    oldest: float | None
    newest: float | None
    prompt_tokens: int
    completion_tokens: int


class CallCache(KnownFacts, BatchBook):
    """One SQLite file of finished calls, shared by every worker thread of this process."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory).expanduser() / CACHE_FILE
        self._lock = threading.Lock()  # the connection
        self._queue = threading.Condition()  # the rows waiting for the writer thread
        self._rows: list[tuple[Any, ...]] = []
        self._writing = False
        self._closing = False
        self._writer: threading.Thread | None = None
        self._write_error: CacheError | None = None
        #: A file written by a newer parallelize: read, never written (`warning` says so).
        self.read_only = False
        self.warning: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                # Prompts can be private: the file is readable by its owner only.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            self._setup()
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(
                f"cannot open the cache {self.path}: {exc}",
                hint="pass --cache-dir DIR or --no-cache, or remove the file",
            ) from None

    def _setup(self) -> None:
        """Switch to WAL and create the schema, waiting out other processes doing the same.

        SQLite does not call its busy handler for every lock taken while the journal mode
        changes, so two processes opening a new file at once can see "database is locked"
        at once: retry with a short backoff, up to the busy timeout.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT
        delay = 0.01
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _migrate(self) -> None:
        """Bring an older (or new, empty) file to SCHEMA_VERSION in one transaction."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self.read_only = True
            self.warning = (
                f"the cache {self.path} was written by a newer parallelize (schema {version}, "
                f"this one knows {SCHEMA_VERSION}): reading it, storing nothing"
            )
            return
        if version == SCHEMA_VERSION:
            return
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # another process may be migrating it too
            if self._db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                for statement in SCHEMA.split(";"):
                    self._db.execute(statement)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(calls)")}
                if "cached_tokens" not in columns:  # a calls table older than version 2
                    self._db.execute(
                        "ALTER TABLE calls ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0"
                    )
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def __enter__(self) -> CallCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write what is still queued, then close the file (a failed write is lost, as before)."""
        with self._queue:
            self._closing = True
            self._queue.notify_all()
        if self._writer is not None:
            self._writer.join()
        with self._lock:
            self._db.close()

    def flush(self) -> None:
        """Wait until every call handed to `put` is committed; raise if writing failed."""
        with self._queue:
            while self._rows or self._writing:
                self._queue.wait()
            if self._write_error is not None:
                raise self._write_error

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        """The cached completions among `keys`; marks them used."""
        self.flush()
        found: dict[str, Completion] = {}
        with self._guard("read"):
            for start in range(0, len(keys), LOOKUP_BATCH):
                batch = list(keys[start : start + LOOKUP_BATCH])
                marks = ",".join("?" * len(batch))
                rows = self._db.execute(
                    "SELECT key, model, text, finish_reason, prompt_tokens, completion_tokens,"
                    f" tool_calls, cached_tokens FROM calls WHERE key IN ({marks})",
                    batch,
                ).fetchall()
                found.update((row[0], _completion(row)) for row in rows)
            if found and not self.read_only:
                now = time.time()
                with self._db:  # one transaction for all the updates, not one commit each
                    self._db.execute("BEGIN")
                    self._db.executemany(
                        "UPDATE calls SET used = ? WHERE key = ?", [(now, key) for key in found]
                    )
        return found

    def put(self, key: str, completion: Completion) -> None:
        """Hand one finished call to the writer thread; raises if an earlier write failed."""
        if self.read_only:
            return
        now = time.time()
        row = (
            key,
            mask(completion.model),  # masked by the reply parser already; the store checks again
            mask(completion.text),
            completion.finish_reason,
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens,
            json.dumps([c.openai() for c in completion.tool_calls])
            if completion.tool_calls
            else None,
            int(completion.truncated),
            now,
            now,
            completion.usage.cached_tokens,
        )
        with self._queue:
            if self._write_error is not None:
                raise self._write_error
            self._rows.append(row)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_behind, name="parallelize-cache", daemon=True
                )
                self._writer.start()
            self._queue.notify_all()

    def _write_behind(self) -> None:
        """The writer thread: commit what is queued, one transaction per batch, until closed."""
        while True:
            with self._queue:
                while not self._rows and not self._closing:
                    self._queue.wait()
                rows, self._rows = self._rows, []
                if not rows:
                    return
                self._writing = True
            try:
                with self._guard("write"), self._db:
                    self._db.execute("BEGIN")
                    self._db.executemany(INSERT_CALL, rows)
            except CacheError as exc:
                with self._queue:
                    self._write_error = exc
                    self._writing = False
                    self._rows.clear()
                    self._queue.notify_all()
                return
            with self._queue:
                self._writing = False
                self._queue.notify_all()

    def info(self) -> CacheInfo:
        """Entries, size and age of the cache."""
        with self._guard("read"):
            count, truncated, oldest, newest, prompt, completion = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(truncated), 0), MIN(created), MAX(created),"
                " COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) FROM calls"
            ).fetchone()
        size = sum(_size(Path(f"{self.path}{suffix}")) for suffix in ("", "-wal", "-shm"))
        return CacheInfo(self.path, count, truncated, size, oldest, newest, prompt, completion)

    def clear(self, *, older_than: float | None = None) -> int:
        """Remove every entry, or those not used for `older_than` seconds; returns how many."""
        if self.read_only:
            raise CacheError(
                f"the cache {self.path} was written by a newer parallelize: not cleared",
                hint="upgrade parallelize, or delete the file to start afresh",
            )
        if older_than is None:
            from .batchexport import ExportMemory  # here: only a full clear needs it

            OverflowMemory(self.path.parent).forget()
            ExportMemory(self.path.parent).forget()
        with self._guard("clear"):
            if older_than is None:
                removed = self._db.execute("DELETE FROM calls").rowcount
            else:
                cutoff = time.time() - older_than
                removed = self._db.execute("DELETE FROM calls WHERE used < ?", (cutoff,)).rowcount
            cutoff = time.time() - (older_than or 0.0)
            self._db.execute("DELETE FROM facts WHERE created < ?", (cutoff,))
            self._db.execute("DELETE FROM token_counts WHERE used < ?", (cutoff,))
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.execute("VACUUM")
            except sqlite3.OperationalError:
                pass  # another process is using the file: the space is reused later instead
        return removed

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise CacheError(
                    f"cannot {action} the cache {self.path}: {exc}",
                    hint="pass --no-cache, or `parallelize cache clear` to start it afresh",
                ) from None


def _completion(row: Iterable[Any]) -> Completion:
    _key, model, text, finish_reason, prompt, completion, tool_calls, cached = row
    return Completion(
        text=text,
        finish_reason=finish_reason,
        usage=Usage(prompt, completion, cached),
        model=model,
        cached=True,
        tool_calls=tuple(tool_call_from(c) for c in json.loads(tool_calls)) if tool_calls else (),
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def describe(info: CacheInfo) -> str:
    """`cache info` as lines of `key: value`."""

    def when(stamp: float | None) -> str:
        if stamp is None:
            return "-"
        age = format_duration(max(0.0, time.time() - stamp))
        return f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(stamp))} ({age} ago)"

    flagged = f" ({info.truncated:,} truncated)" if info.truncated else ""
    lines = [
        f"path: {info.path}",
        f"entries: {info.entries:,}{flagged}",
        f"size: {info.size_bytes / 1_000_000:.1f} MB",
        f"tokens: in {info.prompt_tokens:,} / out {info.completion_tokens:,}",
        f"oldest: {when(info.oldest)}",
        f"newest: {when(info.newest)}",
    ]
    return "\n".join(lines)
