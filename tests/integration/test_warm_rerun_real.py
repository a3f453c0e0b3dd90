"""A warm re-run against the real llama.cpp server makes no request of any kind (issue 14):
the default section of a real package (the server's /tokenize counter, its /props window), run
once through a counting proxy, then again with every call cached. llama-server logs no requests,
so the proxy counts them, GETs included."""

from __future__ import annotations

import email
import http.client
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from realcli import run_cli

#: Headers that belong to one hop, not to the request passed on.
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class CountingProxy(ThreadingHTTPServer):
    """Passes every request on to the server and keeps (method, path) of each."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Pass)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Pass(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingProxy

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._pass()

    def do_POST(self) -> None:
        self._pass()

    def _pass(self) -> None:
        with self.server.lock:
            self.server.seen.append((self.command, self.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=600)
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        reply = upstream.getresponse()
        data = reply.read()
        upstream.close()
        self.send_response(reply.status)
        for name, value in reply.getheaders():
            if name.lower() not in HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def proxy(server_4k) -> Iterator[CountingProxy]:
    server = CountingProxy(server_4k.base_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_warm_rerun_of_a_package_makes_no_request(proxy: CountingProxy, tmp_path: Path) -> None:
    root = tmp_path / "email"
    shutil.copytree(Path(email.__file__).parent, root, ignore=shutil.ignore_patterns("*.pyc"))
    first = run_cli(proxy.base_url, tmp_path, "section", str(root), "-p", "Summarize", "-q")
    assert first.returncode == 0, first.stderr[-2000:]
    asked = list(proxy.seen)
    assert ("GET", "/props") in asked and ("POST", "/tokenize") in asked  # the server counted
    assert sum(path == "/v1/chat/completions" for _, path in asked) > 29
    proxy.seen.clear()
    again = run_cli(proxy.base_url, tmp_path, "section", str(root), "-p", "Summarize", "-q")
    assert again.returncode == 0, again.stderr[-2000:]
    assert proxy.seen == []  # no chat, no /props, no /tokenize, no GET /v1/models
    assert again.stdout == first.stdout
