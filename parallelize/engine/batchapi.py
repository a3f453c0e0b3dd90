"""The provider's Files and Batch APIs over HTTP: upload, create, get, list, cancel, download.

OpenAI's shape, also served by Azure OpenAI (the deployment path is dropped: files and batches
live at the resource's `/openai/files` and `/openai/batches`, with the same `api-version` query)
and LiteLLM's proxy. Input files are streamed from disk and output files to disk, so a 200 MB
file is never held in memory. Keys travel only in headers, and every message is masked.

A request that fails for a reason another try may cure (a 5xx, a 429, a reset connection) is
sent again, waiting as the online retries do (retry.py) or as the server asks within
MAX_SERVER_WAIT: one blip during a 24-hour wait must not end the run. After MAX_TRIES failures in
a row it gives up, saying that a re-run resumes (every step is recorded in the cache first).
Creating a batch is retried only when the server surely made none (429, no connection made).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from ..errors import LLMError
from ..masking import for_people
from .client import Endpoint, public_url
from .retry import RETRYABLE_STATUSES, RetryPolicy, refused_wait, retry_after_seconds
from .transport import ConnectFailed, connect_reason, environment_proxy, tls_context

#: Seconds a metadata exchange (create, get, list, cancel) may take.
META_TIMEOUT = 60.0
#: Seconds an upload or a download may take: a file holds up to 200 MB.
FILE_TIMEOUT = 1800.0
#: Bytes read from disk (or the network) at a time while streaming a file.
PIECE = 1 << 20
#: Bytes of a JSON reply (a batch, a page of batches) read at most.
MAX_JSON_BYTES = 16 * 1024 * 1024
#: The most a downloaded output or error file may hold (what `batch import` reads at most, too):
#: a server that streams without end must not fill the disk.
MAX_DOWNLOAD_BYTES = 4 * 1024 * 1024 * 1024
#: Batches per page when listing, and pages read at most (the newest first).
LIST_PAGE = 100
LIST_PAGES = 20
#: Tries of one request in a row before giving up (the waits double up to a minute: minutes).
MAX_TRIES = 10
#: What a run says when it gives up on the Files or Batch API.
RESUMES = "run the same command again: what is done is kept, and a re-run resumes"

T = TypeVar("T")


class BatchAPIError(LLMError):
    """A Files or Batch API request failed (its status, the server's words)."""


class BatchAPI:
    """One endpoint's Files and Batch APIs, on a small keep-alive pool of its own."""

    def __init__(self, endpoint: Endpoint, *, pause: Callable[[float], None] = time.sleep) -> None:
        """`pause`: how to wait before a retry (a run's own wait stops on an interrupt)."""
        self.endpoint = endpoint
        self._pause = pause
        self._policy = RetryPolicy(max_retries=MAX_TRIES)
        self._answered = False  # a connect failure is retried once the server has answered
        self.azure = ".azure.com" in endpoint.base_url
        self._root = re.sub(r"/deployments/[^/]+/?$", "", endpoint.base_url.rstrip("/"))
        self._params = {"api-version": endpoint.api_version} if endpoint.api_version else {}
        host = urlsplit(endpoint.base_url).netloc.rpartition("@")[2]
        self._headers = [
            (b"Host", host.encode("idna")),
            (b"Accept", b"application/json"),
            *((k.encode(), v.encode()) for k, v in endpoint.headers().items()),
        ]
        self._pool: Any = None
        self._backend: Any = None

    @property
    def line_url(self) -> str:
        """The `url` of each JSONL line and the batch's `endpoint` (Azure's has no /v1)."""
        return "/chat/completions" if self.azure else "/v1/chat/completions"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> BatchAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the API ----

    def upload(self, path: Path) -> str:
        """POST /files (purpose=batch, multipart, streamed from disk); the file's id."""
        boundary = f"parallelize-{secrets.token_hex(12)}"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{path.name}"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = len(head) + path.stat().st_size + len(tail)

        def pieces() -> Iterator[bytes]:
            yield head
            with path.open("rb") as source:
                while piece := source.read(PIECE):
                    yield piece
            yield tail

        headers = [
            (b"Content-Type", f"multipart/form-data; boundary={boundary}".encode()),
            (b"Content-Length", str(size).encode()),
        ]
        reply = self._retried(
            "uploading a batch file",
            lambda: self._json(
                "POST", "files", content=pieces(), headers=headers, limit=FILE_TIMEOUT
            ),
        )
        return _field(reply, "id")

    def create(self, file_id: str, metadata: Mapping[str, str]) -> dict[str, Any]:
        """POST /batches for an uploaded file; the batch object."""
        body = {
            "input_file_id": file_id,
            "endpoint": self.line_url,
            "completion_window": "24h",
            "metadata": dict(metadata),
        }
        reply = self._retried(
            "creating a batch", lambda: self._json("POST", "batches", body=body), unsent=True
        )
        return dict(reply)

    def get(self, batch_id: str) -> dict[str, Any] | None:
        """GET /batches/{id}; None when the server has no such batch (404)."""
        try:
            return dict(
                self._retried(
                    f"asking about {batch_id}", lambda: self._json("GET", f"batches/{batch_id}")
                )
            )
        except BatchAPIError as exc:
            if exc.status == 404:
                return None
            raise

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """POST /batches/{id}/cancel; the batch object."""
        path = f"batches/{batch_id}/cancel"
        return dict(
            self._retried(f"cancelling {batch_id}", lambda: self._json("POST", path, body={}))
        )

    def list(self, *, pages: int = LIST_PAGES) -> Iterator[dict[str, Any]]:
        """The account's batches, newest first, at most `pages` pages of LIST_PAGE."""
        after: str | None = None
        for _ in range(pages):
            query = {"limit": str(LIST_PAGE)} | ({"after": after} if after else {})
            page = self._retried(
                "listing the batches", lambda q=query: self._json("GET", "batches", query=q)
            )
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, list) or not data:
                return
            yield from (b for b in data if isinstance(b, dict))
            last = data[-1].get("id") if isinstance(data[-1], dict) else None
            if not page.get("has_more") or not isinstance(last, str):
                return
            after = last

    def download(self, file_id: str, dest: Path, *, limit: int = MAX_DOWNLOAD_BYTES) -> Path:
        """GET /files/{id}/content streamed into `dest` (written whole, then renamed); a file
        over `limit` bytes is refused and nothing of it is kept."""
        partial = dest.with_name(dest.name + ".part")

        def fetch() -> None:
            with self._stream("GET", f"files/{file_id}/content", limit=FILE_TIMEOUT) as response:
                if response.status >= 400:
                    data = b"".join(_capped(response, 256 * 1024))
                    raise self._error(response.status, data, response.headers)
                self._answered = True
                written = 0
                with partial.open("wb") as out:
                    for piece in response.iter_stream():
                        written += len(piece)
                        if written > limit:
                            partial.unlink(missing_ok=True)
                            raise BatchAPIError(
                                f"file {file_id} is larger than {limit:,} bytes: not downloaded "
                                "(a Batch API output file is far smaller)",
                                status=None,
                                retryable=False,
                            )
                        out.write(piece)

        self._retried(f"downloading {file_id}", fetch)
        os.replace(partial, dest)
        return dest

    # ---- retries ----

    def _retried(self, what: str, call: Callable[[], T], *, unsent: bool = False) -> T:
        """`call`, sent again while it fails for a reason another try may cure; `unsent`: only
        when the server surely did nothing (a 429, no connection made)."""
        failures = 0
        while True:
            try:
                return call()
            except LLMError as exc:
                connect = isinstance(exc, ConnectFailed)
                if not exc.retryable or (connect and not self._answered):
                    raise
                if unsent and not connect and exc.status != 429:
                    raise
                failures += 1
                refused = refused_wait(exc.retry_after, None)
                if failures >= MAX_TRIES or refused:
                    why = refused or f"gave up after {failures} tries"
                    raise BatchAPIError(
                        f"{what}: {exc.message} ({why})",
                        status=exc.status,
                        retryable=False,
                        hint=RESUMES,
                    ) from None
                throttled = exc.status == 429
                self._pause(self._policy.delay(failures, exc.retry_after, throttled=throttled))

    # ---- HTTP ----

    def _url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        params = {**(query or {}), **self._params}
        return f"{self._root}/{path}" + (f"?{urlencode(params)}" if params else "")

    def _json(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content: Any = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        query: Mapping[str, str] | None = None,
        limit: float = META_TIMEOUT,
    ) -> Any:
        extra = list(headers or [])
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()
            extra += [
                (b"Content-Type", b"application/json"),
                (b"Content-Length", str(len(content)).encode()),
            ]
        with self._stream(method, path, content, extra, query, limit) as response:
            data = b"".join(_capped(response, MAX_JSON_BYTES))
        self._answered = True
        if response.status >= 400:
            raise self._error(response.status, data, response.headers)
        try:
            return json.loads(data)
        except ValueError:
            where = f"{method} {public_url(self._url(path))}"
            raise BatchAPIError(f"{where}: the reply is not JSON", status=response.status) from None

    def _stream(
        self,
        method: str,
        path: str,
        content: Any = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        query: Mapping[str, str] | None = None,
        limit: float = META_TIMEOUT,
    ) -> _Guarded:
        pool, backend = self._connect()
        backend.start(limit)
        return _Guarded(
            pool.stream(
                method,
                self._url(path, query),
                headers=[*self._headers, *(headers or [])],
                content=content,
                extensions={"timeout": {"connect": 10.0, "read": limit, "write": limit}},
            )
        )

    def _connect(self) -> tuple[Any, Any]:
        if self._pool is None:
            from .wire import Bounded, make_pool

            self._backend = Bounded()
            tls = tls_context() if self._root.startswith("https:") else None
            proxy = environment_proxy(self._root)
            self._pool = make_pool(self._backend, tls, proxy, connections=2, keepalive=30.0)
        return self._pool, self._backend

    def _error(
        self, status: int, data: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> BatchAPIError:
        try:
            payload = json.loads(data)
            error = payload.get("error") if isinstance(payload, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
        except ValueError:
            message = None
        text = for_people(str(message or data[:300].decode("utf-8", "replace")))
        retryable = status in RETRYABLE_STATUSES or status >= 500
        named = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers or []}
        return BatchAPIError(
            f"HTTP {status}: {text}",
            status=status,
            retryable=retryable,
            retry_after=retry_after_seconds(named),
        )


class _Guarded:
    """`pool.stream(...)` whose network failures become LLMError (one line, masked)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __enter__(self) -> Any:
        try:
            return self._inner.__enter__()
        except Exception as exc:
            raise _transport_error(exc) from None

    def __exit__(self, kind: Any, value: Any, trace: Any) -> None:
        try:
            self._inner.__exit__(kind, value, trace)
        except Exception as exc:
            raise _transport_error(exc) from None
        if type(value).__module__.startswith("httpcore"):  # the network's failures only
            raise _transport_error(value) from None


def _transport_error(exc: Exception) -> LLMError:
    import httpcore

    if isinstance(exc, httpcore.ConnectError):
        return ConnectFailed(connect_reason(exc))
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, httpcore.TimeoutException):
        return BatchAPIError(f"timed out ({for_people(str(exc) or type(exc).__name__)})")
    return BatchAPIError(f"connection failed: {for_people(f'{type(exc).__name__}: {exc}')}")


def _capped(response: Any, cap: int) -> Iterator[bytes]:
    size = 0
    for piece in response.iter_stream():
        size += len(piece)
        if size > cap:
            raise BatchAPIError(f"the reply is larger than {cap // (1024 * 1024)} MiB")
        yield piece


def _field(reply: Any, name: str) -> str:
    value = reply.get(name) if isinstance(reply, dict) else None
    if not isinstance(value, str) or not value:
        raise BatchAPIError(f"the server's reply has no {name}")
    return value
