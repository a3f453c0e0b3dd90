"""httpcore under the chat pools, imported only when a request is made (a fully cached re-run
never loads it): a network backend whose every wait ends by the request's deadline, and the
per-thread pool itself."""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

import httpcore


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


def make_pool(
    backend: Bounded,
    ssl_context: ssl.SSLContext | None,
    proxy: tuple[str, tuple[str, str] | None] | None,
    *,
    connections: int,
    keepalive: float,
) -> httpcore.ConnectionPool | httpcore.HTTPProxy:
    """One worker thread's keep-alive pool (through the proxy when there is one)."""
    limits: dict[str, Any] = {
        "max_connections": connections,
        "keepalive_expiry": keepalive,
        "ssl_context": ssl_context,
        "network_backend": backend,
    }
    if proxy is None:
        return httpcore.ConnectionPool(**limits)
    url, auth = proxy
    return httpcore.HTTPProxy(proxy_url=url, proxy_auth=auth, **limits)
