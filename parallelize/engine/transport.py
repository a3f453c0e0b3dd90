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
import ssl
import threading
import urllib.request
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import httpcore

from ..errors import EndpointError, LLMError

CONNECT_TIMEOUT = 10.0


#: Keep-alive connections each worker thread holds (one is in use at a time).
CONNECTIONS_PER_THREAD = 2


#: Seconds an idle keep-alive connection is kept (httpx's default).
KEEPALIVE_EXPIRY = 5.0


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
    return {"connect": CONNECT_TIMEOUT, "read": seconds, "write": seconds, "pool": seconds}


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
        try:
            response = self._pool().request(
                method, url, headers=headers, content=body, extensions=extensions
            )
        except httpcore.TimeoutException as exc:
            raise LLMError(f"timed out ({type(exc).__name__})") from None
        except (
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.ProxyError,
            httpcore.UnsupportedProtocol,
            OSError,
        ) as exc:
            raise LLMError(f"connection failed: {type(exc).__name__}: {exc}") from None
        kept = {}
        for name, value in response.headers:
            key = name.decode("latin-1").lower()
            if KEPT_HEADERS.match(key):
                kept[key] = value.decode("latin-1")
        return Reply(response.status, kept, response.content)

    def _pool(self) -> httpcore.ConnectionPool | httpcore.HTTPProxy:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            limits: dict[str, Any] = {
                "max_connections": CONNECTIONS_PER_THREAD,
                "keepalive_expiry": KEEPALIVE_EXPIRY,
                "ssl_context": self._ssl_context,
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
