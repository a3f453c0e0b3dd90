"""What endpoints said about themselves, kept in the call cache's file (`CallCache` inherits this).

The model list, context window and tokenizer of an endpoint are asked once a day (FACTS_TTL) per
base URL and model, and the token counts of its tokenizer are kept by text hash, so the dry run,
the run and a re-run plan from the same facts and a fully cached re-run needs no server. An
overflow reply (`CallCache.forget_facts`) or --refresh asks again. Endpoints are named without
user-info or query, and masked; nothing here ever holds a key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..masking import mask

#: Seconds an endpoint's facts (model list, window, tokenizer) are trusted; --refresh renews them.
FACTS_TTL = 24 * 3600
#: Text hashes per SELECT (SQLite's variable limit is 999 on old builds).
LOOKUP_BATCH = 500

FACTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS facts (
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (endpoint, model, kind)
);
CREATE TABLE IF NOT EXISTS token_counts (
    tokenizer TEXT NOT NULL,
    text TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    used REAL NOT NULL,
    PRIMARY KEY (tokenizer, text)
) WITHOUT ROWID
"""


def endpoint_id(base_url: str) -> str:
    """How the cache names an endpoint: its URL without user-info, query (`?api-key=...`) or a
    trailing slash, masked."""
    parts = urlsplit(base_url.rstrip("/"))
    host = parts.netloc.rpartition("@")[2]
    return mask(urlunsplit((parts.scheme, host, parts.path, "", "")))


class KnownFacts:
    """The facts and token-count tables of the cache file (mixed into `CallCache`)."""

    _db: sqlite3.Connection
    _lock: threading.Lock
    read_only: bool
    #: `CallCache._guard`: the connection's lock, sqlite3 errors raised as CacheError.
    _guard: Callable[[str], AbstractContextManager[None]]

    def get_fact(self, endpoint: str, model: str, kind: str) -> tuple[Any, float] | None:
        """What an endpoint said (JSON) and when, if said within FACTS_TTL; else None."""
        with self._guard("read"):
            row = self._db.execute(
                "SELECT value, created FROM facts WHERE endpoint = ? AND model = ? AND kind = ?",
                (endpoint_id(endpoint), model, kind),
            ).fetchone()
        if row is None or row[1] < time.time() - FACTS_TTL:
            return None
        return json.loads(row[0]), row[1]

    def put_fact(self, endpoint: str, model: str, kind: str, value: Any) -> None:
        """Remember what an endpoint said (masked), for FACTS_TTL."""
        if self.read_only:
            return
        row = (endpoint_id(endpoint), model, kind, mask(json.dumps(value)), time.time())
        with self._guard("write"), self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO facts VALUES (?,?,?,?,?)", row)

    def forget_facts(self, endpoint: str, model: str | None = None) -> int:
        """Forget what an endpoint said about a model (every model: None); returns how many."""
        if self.read_only:
            return 0
        where, args = "endpoint = ?", [endpoint_id(endpoint)]
        if model is not None:
            where, args = where + " AND model = ?", [*args, model]
        with self._guard("write"):
            return self._db.execute(f"DELETE FROM facts WHERE {where}", args).rowcount

    def get_counts(self, tokenizer: str, hashes: Sequence[str]) -> dict[str, int]:
        """Known token counts of a tokenizer, by text hash."""
        found: dict[str, int] = {}
        with self._guard("read"):
            for start in range(0, len(hashes), LOOKUP_BATCH):
                batch = list(hashes[start : start + LOOKUP_BATCH])
                rows = self._db.execute(
                    "SELECT text, tokens FROM token_counts WHERE tokenizer = ? AND text IN "
                    f"({','.join('?' * len(batch))})",
                    [tokenizer, *batch],
                ).fetchall()
                found.update(rows)
        return found

    def put_counts(self, tokenizer: str, counts: Mapping[str, int]) -> None:
        """Remember a tokenizer's counts by text hash (one transaction)."""
        if self.read_only or not counts:
            return
        now = time.time()
        rows = [(tokenizer, text, tokens, now) for text, tokens in counts.items()]
        with self._guard("write"), self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO token_counts VALUES (?,?,?,?)", rows)
