"""The provider's batches as records: list, retrieve, cancel (OpenAI's `/v1/batches`).

What `parallelize batch list|status|cancel` show. Everything a server says is read defensively
(a field of the wrong type is left out, strings are masked and capped), and the three ways such a
request goes wrong are told apart: no Batch API at all (llama.cpp answers 404 on `/v1/batches`:
use --export and `batch import`), no such batch (404 on one id), and the key (401/403).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, LLMError
from ..masking import for_people
from .client import ChatClient, status_error

#: Batches one `batch list` shows at most (pages of LIST_PAGE are read until then).
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 1000
LIST_PAGE = 100
#: A batch id as providers write them: anything else is refused before it goes into a URL.
BATCH_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,200}$")
#: The metadata key the engine names its runs under (engine batches carry it).
RUN_KEY = "parallelize_run"
NO_BATCH_API = "this endpoint has no Batch API; use --export/batch import"
NO_BATCH_API_HINT = (
    "run the command with --batch --export FILE, answer FILE elsewhere "
    "(tools/realserver/batchrun.py for a self-hosted server), then `parallelize batch import`"
)
#: Statuses after which a batch changes no more.
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class Batch:
    """One batch as the server describes it (fields it left out are None or empty)."""

    id: str
    status: str
    created_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    endpoint: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    expires_at: int | None = None
    #: The server's reasons when the batch failed validation (one line each).
    errors: tuple[str, ...] = ()

    @property
    def run(self) -> str | None:
        """The parallelize run this batch belongs to, when its metadata names one."""
        return self.metadata.get(RUN_KEY) or self.metadata.get("run")

    @property
    def final(self) -> bool:
        return self.status in FINAL


class BatchAPI:
    """The Batch API of the client's endpoint (its key, proxy, Azure api-version and timeouts)."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def list(self, *, limit: int = DEFAULT_LIST_LIMIT) -> list[Batch]:
        """The newest `limit` batches, newest first."""
        found: list[Batch] = []
        after: str | None = None
        while len(found) < limit:
            page = min(LIST_PAGE, limit - len(found))
            query = f"batches?limit={page}" + (f"&after={after}" if after else "")
            payload = self._call("GET", query, None)
            data = payload.get("data") if isinstance(payload, dict) else None
            if not isinstance(data, list):
                raise LLMError("malformed reply: the batch list has no data", retryable=False)
            batches = [b for b in (batch_from(item) for item in data[:page]) if b is not None]
            found.extend(batches)
            if not batches or not (isinstance(payload, dict) and payload.get("has_more") is True):
                break
            after = batches[-1].id
        return found[:limit]

    def get(self, batch_id: str) -> Batch:
        """One batch, as the server has it now."""
        return self._one("GET", f"batches/{check_id(batch_id)}", batch_id)

    def cancel(self, batch_id: str) -> Batch:
        """Ask the server to cancel a batch; it is `cancelling` until the running lines end."""
        return self._one("POST", f"batches/{check_id(batch_id)}/cancel", batch_id)

    def _one(self, method: str, path: str, batch_id: str) -> Batch:
        found = batch_from(self._call(method, path, batch_id))
        if found is None:
            raise LLMError("malformed reply: not a batch object", retryable=False)
        return found

    def _no_batch_api(self) -> bool:
        """After a 404 for one batch: whether the list is missing too (a server without the
        Batch API, as llama.cpp), not only that batch."""
        return self.client.exchange("GET", "batches?limit=1").status == 404

    def _call(self, method: str, path: str, batch_id: str | None) -> Any:
        reply = self.client.exchange(method, path, {} if method == "POST" else None)
        if reply.status == 404:
            if batch_id is None or self._no_batch_api():
                raise ConfigError(NO_BATCH_API, hint=NO_BATCH_API_HINT)
            raise ConfigError(
                f"no batch {for_people(batch_id, 200)} at this endpoint",
                hint="`parallelize batch list` shows the endpoint's batches",
            )
        if reply.status >= 400:
            raise status_error(reply)
        try:
            return reply.json()
        except (ValueError, RecursionError):
            raise LLMError("malformed reply: not JSON", retryable=False) from None


def check_id(batch_id: str) -> str:
    """A batch id safe to put in a URL path, or exit 2 naming it."""
    if not BATCH_ID.match(batch_id):
        raise ConfigError(
            f"ID: '{for_people(batch_id, 80)}' is not a batch id",
            hint="copy it from `parallelize batch list`, e.g. batch_abc123",
        )
    return batch_id


def batch_from(raw: Any) -> Batch | None:
    """A batch object read defensively; None when it has no id or status."""
    if not isinstance(raw, dict):
        return None
    batch_id, status = _text(raw.get("id")), _text(raw.get("status"))
    if not batch_id or not status:
        return None
    counts = raw.get("request_counts")
    counts = counts if isinstance(counts, dict) else {}
    metadata = raw.get("metadata")
    pairs = metadata.items() if isinstance(metadata, dict) else ()
    return Batch(
        id=batch_id,
        status=status,
        created_at=_whole(raw.get("created_at")),
        total=_whole(counts.get("total")) or 0,
        completed=_whole(counts.get("completed")) or 0,
        failed=_whole(counts.get("failed")) or 0,
        metadata={_text(k) or "?": _text(v) or "" for k, v in list(pairs)[:16]},
        endpoint=_text(raw.get("endpoint")),
        input_file_id=_text(raw.get("input_file_id")),
        output_file_id=_text(raw.get("output_file_id")),
        error_file_id=_text(raw.get("error_file_id")),
        expires_at=_whole(raw.get("expires_at")),
        errors=_errors(raw.get("errors")),
    )


def _errors(raw: Any) -> tuple[str, ...]:
    """`errors.data[]` as lines: `line 3: param: message`."""
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, list):
        return ()
    lines = []
    for item in data[:20]:
        if not isinstance(item, dict):
            continue
        where = [f"line {item['line']}" if _whole(item.get("line")) is not None else None]
        where.append(_text(item.get("param")))
        message = _text(item.get("message")) or _text(item.get("code")) or json.dumps(item)
        lines.append(": ".join([*(w for w in where if w), for_people(message)]))
    return tuple(lines)


def _text(value: Any) -> str | None:
    return for_people(value, 200) or None if isinstance(value, str) else None


def _whole(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
