"""The provider's batches as records: list, retrieve, cancel (OpenAI's `/v1/batches`), through
the engine's Batch API client.

What `parallelize batch list|status|cancel` show. Everything a server says is read defensively
(a field of the wrong type is left out, strings are masked and capped), and the three ways such a
request goes wrong are told apart: no Batch API at all (llama.cpp answers 404 on `/v1/batches`:
use --export and `batch import`), no such batch (404 on one id), and the key (401/403).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, FatalLLMError, LLMError
from ..masking import for_people
from .batchapi import LIST_PAGE, BatchAPI, BatchAPIError
from .batchrun import RUN_KEY
from .client import Endpoint, unreachable
from .transport import ConnectFailed

#: Batches `batch list` shows by default.
DEFAULT_LIST_LIMIT = 20
#: A batch id as providers write them: anything else is refused before it goes into a URL.
BATCH_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,200}$")
NO_BATCH_API = "this endpoint has no Batch API; use --export/batch import"
NO_BATCH_API_HINT = (
    "run the command with --batch --export FILE, answer FILE elsewhere "
    "(tools/realserver/batchrun.py for a self-hosted server), then `parallelize batch import`"
)


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


class Batches:
    """The endpoint's batches as records, through the engine's Batch API client (batchapi.py:
    its key, proxy, Azure root and api-version, timeouts)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.api = BatchAPI(endpoint)

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.close()

    def list(self, *, limit: int = DEFAULT_LIST_LIMIT) -> list[Batch]:
        """The newest `limit` batches, newest first."""
        pages = -(-limit // LIST_PAGE)
        found: list[Batch] = []
        with self._errors(None):
            for raw in self.api.list(pages=pages):
                batch = batch_from(raw)
                if batch is not None:
                    found.append(batch)
                if len(found) >= limit:
                    break
        return found

    def get(self, batch_id: str) -> Batch:
        """One batch, as the server has it now."""
        with self._errors(check_id(batch_id)):
            raw = self.api.get(batch_id)
        if raw is None:
            raise self._missing(batch_id)
        return _batch(raw)

    def cancel(self, batch_id: str) -> Batch:
        """Ask the server to cancel a batch; it is `cancelling` until the running lines end."""
        with self._errors(check_id(batch_id)):
            return _batch(self.api.cancel(batch_id))

    @contextmanager
    def _errors(self, batch_id: str | None) -> Iterator[None]:
        """The Batch API's failures as the CLI says them: no Batch API, no such batch, the key,
        the endpoint out of reach (each exit 2); anything else stays a failed request (exit 1)."""
        try:
            yield
        except ConnectFailed as exc:
            raise unreachable(self.endpoint, exc) from None
        except BatchAPIError as exc:
            if exc.status == 404:
                raise self._missing(batch_id) from None
            if exc.status in (401, 403):
                raise FatalLLMError(
                    exc.message, status=exc.status, hint="check OPENAI_API_KEY for this endpoint"
                ) from None
            raise

    def _missing(self, batch_id: str | None) -> ConfigError:
        """After a 404: a server without the Batch API (its list is missing too, as llama.cpp's
        is), or only no such batch."""
        if batch_id is not None:
            try:
                next(self.api.list(pages=1), None)
            except BatchAPIError as exc:
                if exc.status != 404:
                    raise
            else:
                return ConfigError(
                    f"no batch {for_people(batch_id, 200)} at this endpoint",
                    hint="`parallelize batch list` shows the endpoint's batches",
                )
        return ConfigError(NO_BATCH_API, hint=NO_BATCH_API_HINT)


def _batch(raw: Any) -> Batch:
    found = batch_from(raw)
    if found is None:
        raise LLMError("malformed reply: not a batch object", retryable=False)
    return found


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
