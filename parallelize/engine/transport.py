"""HTTP under the client: one small httpcore keep-alive pool per worker thread, proxies, TLS.

httpx.Client's per-request work (URL merging, cookies, hooks, models) cost about as much CPU as
the exchange itself at 64 workers, so requests go to httpcore directly; httpx only builds the TLS
context for https endpoints.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.request
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import httpcore

from ..errors import EndpointError, LLMError
from ..masking import for_people

CONNECT_TIMEOUT = 10.0


#: Keep-alive connections each worker thread holds (one is in use at a time).
CONNECTIONS_PER_THREAD = 2


#: Seconds an idle keep-alive connection is kept (httpx's default).
KEEPALIVE_EXPIRY = 5.0


#: Bytes of a reply read at most: a chat completion is far smaller; a server that sends more is
#: cut off (one failed attempt). Parsing JSON can take ~25x its size in memory, so this stays low.
MAX_REPLY_BYTES = 8 * 1024 * 1024
#: Bytes of an error reply read at most: its message is shown capped anyway.
MAX_ERROR_BYTES = 256 * 1024


#: Response headers worth keeping: they drive retries, pacing and debugging.
KEPT_HEADERS = re.compile(r"^(retry-after(-ms)?|x-ratelimit-.*|x-request-id|openai-.*)$")


def tls_context() -> ssl.SSLContext:
    """The verifying TLS context (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), built once per
    setting: building one costs about 50 ms, and the metadata probe and the run share it."""
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    import httpx  # only for https: a local server's run never loads it

    return httpx.create_ssl_context(trust_env=True)


def timeouts(seconds: float) -> dict[str, float]:
    """httpcore's timeout extension: CONNECT_TIMEOUT to connect, `seconds` for each later wait."""
    connect = min(CONNECT_TIMEOUT, seconds)
    return {"connect": connect, "read": seconds, "write": seconds, "pool": seconds}


class Bounded(httpcore.NetworkBackend):
    """A network backend whose every connect, read and write ends by the request's deadline.

    httpcore's timeouts bound each socket wait, so a reply trickling in a byte at a time would
    never time out; here each wait is shortened to what is left of the whole request's time, so
    `--timeout` bounds a request from connect to last byte. Each worker thread has its own pool,
    so the deadline is per thread. Not covered: name resolution (the system resolver's own
    timeout bounds it), and a host with several addresses gets the time left for each.
    """

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()

    def start(self, seconds: float) -> None:
        """The current thread's next request must end within `seconds`."""
        self._local.deadline = time.monotonic() + seconds
        self._local.limit = seconds

    def left(self, timeout: float | None, kind: type[Exception]) -> float | None:
        """`timeout` shortened to the time the request has left; raises `kind` when none is."""
        deadline = getattr(self._local, "deadline", None)
        if deadline is None:
            return timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise kind(f"the whole request took longer than {self._local.limit:g}s")
        return remaining if timeout is None else min(timeout, remaining)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        wait = self.left(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, wait, local_address, socket_options)
        return _BoundedStream(stream, self)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        wait = self.left(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._inner.connect_unix_socket(path, wait, socket_options), self)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _BoundedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, backend: Bounded) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait = self._backend.left(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(
            self._inner.start_tls(ssl_context, server_hostname, wait), self._backend
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class Reply(NamedTuple):
    """A chat call's HTTP reply: status, kept headers (lower-case) and body."""

    status: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class ConnectFailed(LLMError):
    """No connection was made, so the request never reached the server: refused, host name not
    resolved, TLS handshake refused. The client decides whether that means the endpoint is
    unreachable (nothing ever answered) or is one retryable failure. A connect that times out is
    not one of these: a busy server may accept the next attempt."""

    def __init__(self, reason: str, *, via: str | None = None) -> None:
        proxy = f" (via the proxy {via})" if via else ""
        super().__init__(f"cannot connect{proxy}: {reason}")
        #: A few words on why, e.g. "connection refused".
        self.reason = f"{reason}{proxy}"


def connect_reason(exc: Exception) -> str:
    """Why a connection failed, in the words a person looks for ("connection refused")."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
    cause = inner or exc.__cause__ or exc.__context__
    if isinstance(exc, httpcore.ConnectTimeout) or isinstance(cause, TimeoutError):
        return "connection timed out"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name ({for_people(cause.strerror or str(cause), 200)})"
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = cause.verify_message or cause.reason or str(cause)
        return f"TLS certificate verification failed ({for_people(str(detail), 200)})"
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed ({for_people(str(cause.reason or cause), 200)})"
    if isinstance(cause, OSError) and cause.strerror:
        return for_people(cause.strerror, 200).lower()
    return for_people(f"{type(exc).__name__}: {exc}", 200)


class ChatPools:
    """Each worker thread keeps its own keep-alive connections to the chat endpoint.

    One pool shared by 64 threads costs a scan of every connection under one lock on each
    request and release; a pool per thread costs nothing of the kind. The TLS context is built
    once and shared. A proxy from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY)
    is honoured as httpx would.
    """

    def __init__(self, url: str, *, ssl_context: ssl.SSLContext | None) -> None:
        self._ssl_context = ssl_context
        self._proxy = environment_proxy(url)
        self._local = threading.local()
        self._backend = Bounded()
        self._all: list[httpcore.ConnectionPool | httpcore.HTTPProxy] = []
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: dict[str, float],
    ) -> Reply:
        """One request; transport failures raise LLMError, HTTP statuses come back as they are."""
        extensions = {"timeout": timeout}
        self._backend.start(timeout["read"])
        try:
            with self._pool().stream(
                method, url, headers=headers, content=body, extensions=extensions
            ) as response:
                kept = {}
                for name, value in response.headers[:200]:
                    key = name.decode("latin-1").lower()
                    if KEPT_HEADERS.match(key):
                        kept[key] = value.decode("latin-1")[:256]
                content = _read_capped(response)
        except httpcore.ConnectError as exc:  # a connect timeout is a busy server: retried
            via = self._proxy[0] if self._proxy else None
            raise ConnectFailed(connect_reason(exc), via=via) from None
        except httpcore.TimeoutException as exc:
            raise LLMError(f"timed out ({for_people(str(exc) or type(exc).__name__)})") from None
        except (
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.ProxyError,
            httpcore.UnsupportedProtocol,
            OSError,
        ) as exc:
            reason = for_people(f"{type(exc).__name__}: {exc}")
            raise LLMError(f"connection failed: {reason}") from None
        return Reply(response.status, kept, content)

    def _pool(self) -> httpcore.ConnectionPool | httpcore.HTTPProxy:
        """This thread's pool (made on its first request)."""
        pool = getattr(self._local, "pool", None)
        if pool is None:
            limits: dict[str, Any] = {
                "max_connections": CONNECTIONS_PER_THREAD,
                "keepalive_expiry": KEEPALIVE_EXPIRY,
                "ssl_context": self._ssl_context,
                "network_backend": self._backend,
            }
            if self._proxy is None:
                pool = httpcore.ConnectionPool(**limits)
            else:
                url, auth = self._proxy
                pool = httpcore.HTTPProxy(proxy_url=url, proxy_auth=auth, **limits)
            self._local.pool = pool
            with self._lock:
                self._all.append(pool)
        return pool

    def close(self) -> None:
        with self._lock:
            pools, self._all = self._all, []
        for pool in pools:
            pool.close()


def _read_capped(response: httpcore.Response) -> bytes:
    """The body, read up to MAX_REPLY_BYTES (MAX_ERROR_BYTES for an error status)."""
    cap = MAX_ERROR_BYTES if response.status >= 400 else MAX_REPLY_BYTES
    parts: list[bytes] = []
    size = 0
    for part in response.iter_stream():
        parts.append(part)
        size += len(part)
        if size > cap:
            if response.status >= 400:  # enough of an error message: keep what was read
                return b"".join(parts)[:cap]
            raise LLMError(f"the reply is larger than {cap // (1024 * 1024)} MiB: not read further")
    return b"".join(parts)


def environment_proxy(url: str) -> tuple[str, tuple[str, str] | None] | None:
    """The proxy URL (without credentials) and credentials the environment sets for `url`."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    found = urlsplit(proxy)
    if found.scheme not in ("http", "https"):
        raise EndpointError(
            f"unsupported proxy {found.scheme}:// for {parts.scheme} requests",
            hint="set HTTPS_PROXY / HTTP_PROXY to an http:// or https:// proxy",
        )
    auth = None
    if found.username is not None:
        auth = (unquote(found.username), unquote(found.password or ""))
    netloc = found.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if found.port:
        netloc = f"{netloc}:{found.port}"
    return f"{found.scheme}://{netloc}", auth
