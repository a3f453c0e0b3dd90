"""A loopback server that attacks its client (stdlib only): the tests of issue 12 point the
product at it and assert that nothing breaks, waits without bound, or leaks the key.

Each request takes the next `Act` of the script (the last one repeats). An act's body may be
bytes or a function of the request (to echo its headers); it may trickle its body a few bytes at
a time, send absurd headers, or be huge. `served` keeps every request (headers and body).

Modes, one per family of attack: `echo_headers` (an error page repeating the Authorization
header), `malformed` (a 200 whose JSON has the wrong shape inside), `trickle` (headers, then a
byte at a time), `huge` (megabytes of error message), `absurd_headers` (Retry-After of days, a
date an hour ahead, garbage); `completion(...)` builds any reply field (usage, tool calls,
escape sequences in the content). `models` is what GET /models returns.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Body = bytes | Callable[[dict[str, str], bytes], bytes]


@dataclass
class Act:
    """One reply: status, headers, body, and how slowly it is sent."""

    status: int = 200
    body: Body = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds between pieces of the body (None: all at once).
    trickle: float | None = None
    piece: int = 1
    #: Seconds before the reply starts.
    delay: float = 0.0


@dataclass
class Served:
    path: str
    headers: dict[str, str]
    body: bytes


def completion(content: Any = "ok", **extra: Any) -> bytes:
    """A chat completion whose message content (or any other field) the test chooses."""
    message = {"role": "assistant", "content": content}
    doc: dict[str, Any] = {
        "id": "x",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    doc.update(extra)
    return json.dumps(doc).encode()


def echo_headers(status: int = 401, *, html: bool = False) -> Act:
    """An error that repeats every request header, Authorization included."""

    def body(headers: dict[str, str], _: bytes) -> bytes:
        listed = "; ".join(f"{k}: {v}" for k, v in headers.items())
        if html:
            return f"<html><body><h1>Bad gateway</h1><pre>{listed}</pre></body></html>".encode()
        return json.dumps({"error": {"message": f"rejected request with {listed}"}}).encode()

    kind = "text/html" if html else "application/json"
    return Act(status, body, {"Content-Type": kind})


def malformed(body: bytes) -> Act:
    return Act(200, body, {"Content-Type": "application/json"})


def trickle(seconds_per_byte: float = 0.05, body: bytes | None = None) -> Act:
    return Act(200, body or completion("slow " * 40), {}, trickle=seconds_per_byte)


def huge(megabytes: int = 5, status: int = 500) -> Act:
    message = "x" * (megabytes * 1024 * 1024)
    return Act(status, json.dumps({"error": {"message": message}}).encode())


def absurd_headers(**headers: str) -> Act:
    body = json.dumps({"error": {"message": "slow down"}}).encode()
    return Act(429, body, dict(headers))


class HostileServer:
    """Serves the script on 127.0.0.1 (port 0) in a background thread."""

    def __init__(self) -> None:
        self.acts: list[Act] = [Act(200, completion())]
        self.served: list[Served] = []
        self.models: bytes = b'{"data": [{"id": "test-model"}]}'
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._reply(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._reply(self.rfile.read(length))

            def _reply(self, body: bytes) -> None:
                headers = {k: v for k, v in self.headers.items()}
                chat = self.path.rstrip("/").endswith("chat/completions")
                with server._lock:
                    server.served.append(Served(self.path, headers, body))
                    act = Act(404, b'{"error": "not here"}')
                    if self.path.rstrip("/").endswith("/models"):
                        act = Act(200, server.models)
                    if chat:
                        act = server.acts.pop(0) if len(server.acts) > 1 else server.acts[0]
                time.sleep(act.delay)
                content = act.body(headers, body) if callable(act.body) else act.body
                try:
                    self.send_response(act.status)
                    for name, value in act.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    if act.trickle is None:
                        self.wfile.write(content)
                        return
                    for start in range(0, len(content), act.piece):
                        self.wfile.write(content[start : start + act.piece])
                        self.wfile.flush()
                        time.sleep(act.trickle)
                except OSError:  # the client gave up: that is the point of some acts
                    self.close_connection = True

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, *acts: Act) -> None:
        with self._lock:
            self.acts = list(acts)
            self.served = []
            self.models = b'{"data": [{"id": "test-model"}]}'

    def chat_requests(self) -> list[Served]:
        return [s for s in self.served if s.path.rstrip("/").endswith("chat/completions")]

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
