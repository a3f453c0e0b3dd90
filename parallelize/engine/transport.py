"""HTTP under the client: one small httpcore keep-alive pool per worker thread, proxies, TLS.

httpx.Client's per-request work (URL merging, cookies, hooks, models) cost about as much CPU as
the exchange itself at 64 workers, so requests go to httpcore directly (`wire`, loaded with the
first request); httpx only builds the TLS context for https endpoints.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import threading
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit

from ..errors import EndpointError, LLMError
from ..masking import for_people

if TYPE_CHECKING:
    import ssl

    from .wire import Bounded

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
    setting: building one costs about 50 ms, and the metadata probe and the run share it. The
    lock makes the first volley's 64 workers wait for one build instead of each making its own
    (lru_cache does not hold a second caller back while the first one computes)."""
    with _TLS_LOCK:
        return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


_TLS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    import httpx  # only for https: a local server's run never loads it

    return httpx.create_ssl_context(trust_env=True)


def timeouts(seconds: float) -> dict[str, float]:
    """httpcore's timeout extension: CONNECT_TIMEOUT to connect, `seconds` for each later wait."""
    connect = min(CONNECT_TIMEOUT, seconds)
    return {"connect": connect, "read": seconds, "write": seconds, "pool": seconds}


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
    import ssl

    import httpcore

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
    is honoured as httpx would. Nothing is built before the first request (httpcore, the TLS
    context): a run whose every call is cached opens no connection and loads neither.
    """

    def __init__(self, url: str, *, tls: bool) -> None:
        self._tls = tls
        self._proxy = environment_proxy(url)
        self._local = threading.local()
        self._backend: Bounded | None = None
        self._all: list[Any] = []
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
        import httpcore

        extensions = {"timeout": timeout}
        pool, backend = self._pool()
        backend.start(timeout["read"])
        try:
            with pool.stream(
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

    def _pool(self) -> tuple[Any, Bounded]:
        """This thread's pool (made on its first request) and the backend under every pool."""
        pool = getattr(self._local, "pool", None)
        if pool is None:
            from .wire import Bounded, make_pool

            with self._lock:
                if self._backend is None:
                    self._backend = Bounded()
            ssl_context = tls_context() if self._tls else None
            pool = make_pool(
                self._backend,
                ssl_context,
                self._proxy,
                connections=CONNECTIONS_PER_THREAD,
                keepalive=KEEPALIVE_EXPIRY,
            )
            self._local.pool = pool
            with self._lock:
                self._all.append(pool)
        assert self._backend is not None  # set before the first pool
        return pool, self._backend

    def close(self) -> None:
        with self._lock:
            pools, self._all = self._all, []
        for pool in pools:
            pool.close()


def _read_capped(response: Any) -> bytes:
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
    names = (name.lower() for name in os.environ)
    if not any(name.endswith("_proxy") and name != "no_proxy" for name in names):
        return None  # what urllib would find, without loading it (and http.client, ssl)
    import urllib.request

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
