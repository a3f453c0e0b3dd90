"""The chat hot path (httpcore pools per thread): proxies, Azure's api-version, replies."""

from __future__ import annotations

import base64
import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from parallelize.engine.client import ChatClient, Endpoint
from parallelize.engine.transport import environment_proxy, tls_context
from parallelize.errors import EndpointError, LLMError
from parallelize.records import ChatRequest

HOP_HEADERS = {"proxy-authorization", "proxy-connection", "connection", "transfer-encoding"}


class ForwardProxy(ThreadingHTTPServer):
    """A plain HTTP forward proxy: requests arrive in absolute form and are passed on."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ForwardProxy

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Proxy-Authorization")))
        target = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
        path = target.path + (f"?{target.query}" if target.query else "")
        upstream.request("POST", path, body=body, headers=headers)
        reply = upstream.getresponse()
        data = reply.read()
        upstream.close()
        self.send_response(reply.status)
        for name, value in reply.getheaders():
            if name.lower() not in HOP_HEADERS | {"content-length"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def ask(base_url: str, text: str = "hello") -> str:
    request = ChatRequest("test-model", ({"role": "user", "content": text},))
    with ChatClient(Endpoint(base_url, "sk-test-loopback-key-0000")) as client:
        return client.complete(request).text


def test_chat_calls_go_through_the_environment_proxy_with_its_credentials(
    llm, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm.script(reply="proxied answer")
    host_port = proxy.url.removeprefix("http://")
    monkeypatch.setenv("HTTP_PROXY", f"http://user%40corp:s%3Acret@{host_port}")
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.delenv("no_proxy")

    assert ask(llm.base_url) == "proxied answer"

    assert llm.count() == 1
    [(path, authorization)] = proxy.seen
    assert path == llm.base_url + "/chat/completions"
    assert authorization == "Basic " + base64.b64encode(b"user@corp:s:cret").decode()


def test_no_proxy_sends_chat_calls_directly(
    llm, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)  # NO_PROXY=127.0.0.1 is set for every test
    assert ask(llm.base_url, "direct") == "ECHO direct"
    assert llm.count() == 1 and proxy.seen == []


def test_api_version_is_sent_as_a_query_parameter(llm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    endpoint = Endpoint.resolve()
    request = ChatRequest("test-model", ({"role": "user", "content": "azure"},))
    with ChatClient(endpoint) as client:
        assert client.complete(request).text == "ECHO azure"
    [seen] = llm.requests
    assert (seen.path, seen.query) == ("/v1/chat/completions", "api-version=2024-10-21")


def test_a_socks_proxy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(EndpointError, match="unsupported proxy socks5://") as raised:
        environment_proxy("https://api.openai.com/v1/chat/completions")
    assert "HTTPS_PROXY" in (raised.value.hint or "")


def test_a_proxy_without_a_scheme_is_read_as_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")
    assert environment_proxy("https://api.openai.com/v1") == ("http://proxy.corp:3128", None)


def test_the_tls_context_is_built_once_per_certificate_setting(monkeypatch) -> None:
    import certifi

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    first = tls_context()
    assert tls_context() is first
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    assert tls_context() is not first


def test_an_error_reply_without_a_body_is_named_by_its_status(llm) -> None:
    llm.script(status=503, raw="")
    request = ChatRequest("test-model", ({"role": "user", "content": "hi"},))
    client = ChatClient(Endpoint(llm.base_url, "sk-test-loopback-key-0000"))
    with client, pytest.raises(LLMError, match=r"^HTTP 503: Service Unavailable$") as raised:
        client.complete(request)
    assert raised.value.retryable


def test_the_first_volley_builds_one_tls_context() -> None:
    """64 workers opening their first https connection at once share one context (~50 ms to
    build), instead of each building its own while the first one is being made."""
    import threading

    from parallelize.engine import transport

    transport._tls_context.cache_clear()
    got = []
    workers = [
        threading.Thread(target=lambda: got.append(transport.tls_context())) for _ in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(got) == 8 and len({id(context) for context in got}) == 1
