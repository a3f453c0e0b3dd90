"""Tests of the loopback OpenAI server, over real HTTP with httpx and the official openai SDK."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from llmserver import LLMServer, RecordedRequest, format_reset

MODEL = "test-model"
SERVER_SCRIPT = Path(__file__).with_name("llmserver.py")
ENV_TO_CLEAR = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "OPENAI_API_KEY", "OPENAI_BASE_URL")


@pytest.fixture(scope="module")
def _running() -> Iterator[LLMServer]:
    """One server for the whole module."""
    with LLMServer() as srv:
        yield srv


@pytest.fixture
def _server(_running: LLMServer) -> LLMServer:
    """The module's server, reset for this test."""
    _running.reset()
    return _running


@pytest.fixture(scope="module")
def _quiet_env() -> Iterator[None]:
    """No proxy or OpenAI variables while the module's clients read the environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ENV_TO_CLEAR:
            patch.delenv(name, raising=False)
            patch.delenv(name.lower(), raising=False)
        patch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield


@pytest.fixture(scope="module")
def http(_running: LLMServer, _quiet_env: None) -> Iterator[httpx.Client]:
    """An httpx client pointed at the server's /v1 (module-wide: creating one costs ~0.1 s)."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    with httpx.Client(base_url=_running.base_url, timeout=10, limits=limits) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(_running: LLMServer, _quiet_env: None) -> Iterator[openai.OpenAI]:
    """An official OpenAI SDK client pointed at the server, without retries."""
    with openai.OpenAI(base_url=_running.base_url, api_key="test", max_retries=0) as client:
        yield client


def chat(text: str, **extra: object) -> dict[str, object]:
    """Return a chat-completions request body with one user message."""
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """Return the largest number of [begin, end] spans open at the same moment."""
    events = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_default_reply_echoes_last_user_message_with_usage(
    _server: LLMServer, http: httpx.Client
) -> None:
    """Without rules the reply is ECHO + the last user message, with usage counts."""
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "marker-1"}]},
        ],
    }
    response = http.post("/chat/completions", json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["model"] == MODEL
    assert data["system_fingerprint"] == "fp_loopback"
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "ECHO marker-1", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    usage = data["usage"]
    assert usage["prompt_tokens"] == (2 + 3) + (2 + 3)
    assert usage["completion_tokens"] == 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    [rec] = _server.requests
    assert isinstance(rec, RecordedRequest)
    assert (rec.method, rec.path, rec.status) == ("POST", "/v1/chat/completions", 200)
    assert rec.prompt == "be brief\nmarker-1"
    assert rec.last_user == "marker-1"
    assert rec.headers["content-type"] == "application/json"
    assert rec.start <= rec.begin <= rec.end
    assert _server.count("marker-1") == 1
    assert _server.count() == 1


def test_openai_sdk_parses_a_completion(_server: LLMServer, sdk: openai.OpenAI) -> None:
    """The official SDK parses a completion and sends the bearer key."""
    completion = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "sdk-marker"}]
    )
    assert completion.choices[0].message.content == "ECHO sdk-marker"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    assert _server.requests[0].headers["authorization"] == "Bearer test"


def test_openai_sdk_streams_with_usage(_server: LLMServer, sdk: openai.OpenAI) -> None:
    """The SDK reads a stream: role, content deltas, finish_reason, usage chunk, [DONE]."""
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "ECHO stream me please"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert _server.requests[0].status == 200


def test_stream_wire_format(http: httpx.Client) -> None:
    """A stream is text/event-stream data lines ending with data: [DONE]."""
    with http.stream("POST", "/chat/completions", json=chat("raw", stream=True)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert "usage" not in events[-1]


def test_openai_sdk_unknown_model_is_not_found(sdk: openai.OpenAI) -> None:
    """An unknown model gives OpenAI's 404 model_not_found."""
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"
    assert "The model `gpt-nope` does not exist" in caught.value.message


def test_openai_sdk_rate_limit_error_has_retry_after(
    _server: LLMServer, sdk: openai.OpenAI
) -> None:
    """Over the rpm bucket the SDK raises RateLimitError with retry-after headers."""
    _server.rpm = 60
    messages = [{"role": "user", "content": "x"}]
    ok = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=messages)
    headers = caught.value.response.headers
    assert headers["retry-after"] == "1"
    assert 0 < int(headers["retry-after-ms"]) <= 1000
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "requests"


def test_rule_by_substring_applies_times_then_falls_back(
    _server: LLMServer, http: httpx.Client
) -> None:
    """A rule with times=1 answers once, then the default echo takes over."""
    rule = _server.script("MARK", reply="scripted", times=1)
    first = http.post("/chat/completions", json=chat("has MARK inside")).json()
    second = http.post("/chat/completions", json=chat("has MARK inside")).json()
    assert first["choices"][0]["message"]["content"] == "scripted"
    assert second["choices"][0]["message"]["content"] == "ECHO has MARK inside"
    assert rule.hits == 1
    assert _server.count("MARK") == 2


def test_rule_callables_status_and_verbatim_headers(_server: LLMServer, http: httpx.Client) -> None:
    """Predicate and reply callables work; error rules send their status and headers verbatim."""
    _server.script(lambda body: body.get("temperature") == 0, reply=lambda body: body["model"])
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    _server.script("slow down", status=429, headers={"Retry-After": date})
    _server.script("broken", raw="{not json", status=200)
    _server.script("cut", reply="x" * 100, finish_reason="content_filter")
    reply = http.post("/chat/completions", json=chat("q", temperature=0)).json()
    assert reply["choices"][0]["message"]["content"] == MODEL
    limited = http.post("/chat/completions", json=chat("slow down"))
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == date
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert http.post("/chat/completions", json=chat("broken")).text == "{not json"
    cut = http.post("/chat/completions", json=chat("cut", max_tokens=5)).json()["choices"][0]
    assert (len(cut["message"]["content"]), cut["finish_reason"]) == (20, "length")
    filtered = http.post("/chat/completions", json=chat("cut")).json()["choices"][0]
    assert filtered["finish_reason"] == "content_filter"


def test_n_choices_and_tool_calls(_server: LLMServer, sdk: openai.OpenAI) -> None:
    """n > 1 gives n choices; a tool_calls rule answers with tool calls and null content."""
    many = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "n"}], n=3
    )
    assert [c.message.content for c in many.choices] == ["ECHO n", "ECHO n #1", "ECHO n #2"]
    call = {"function": {"name": "lookup", "arguments": {"q": 1}}}
    _server.script("tool", tool_calls=[call])
    tools = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "tool"}])
    choice = tools.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    function = choice.message.model_dump()["tool_calls"][0]["function"]
    assert (function["name"], json.loads(function["arguments"])) == ("lookup", {"q": 1})


def test_rpm_bucket_sends_429_and_rate_limit_headers(
    _server: LLMServer, http: httpx.Client
) -> None:
    """The rpm bucket allows `burst` requests, then 429; every response has x-ratelimit-*."""
    _server.rpm = 120
    _server.burst = 2
    responses = [http.post("/chat/completions", json=chat(f"r{i}")) for i in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses] == ["1", "0", "0"]
    assert all(r.headers["x-ratelimit-limit-requests"] == "120" for r in responses)
    assert re.fullmatch(r"\d+(\.\d+)?(ms|s)", responses[1].headers["x-ratelimit-reset-requests"])
    assert responses[2].headers["retry-after"] == "1"
    assert responses[2].json()["error"]["message"].startswith("Rate limit reached for requests")
    assert [r.status for r in _server.requests] == [200, 200, 429]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(360, "6m0s"), (1, "1s"), (1.5, "1.5s"), (0.12, "120ms"), (3661.5, "1h1m1.5s"), (0, "0s")],
)
def test_format_reset(seconds: float, text: str) -> None:
    """Durations are formatted like OpenAI's x-ratelimit-reset-* headers."""
    assert format_reset(seconds) == text


def test_latency_and_peak_concurrency(_server: LLMServer, http: httpx.Client) -> None:
    """Eight concurrent requests with latency 1 s all overlap on the server."""
    _server.latency = 1.0
    barrier = threading.Barrier(8)

    def one(i: int) -> int:
        barrier.wait()
        return http.post("/chat/completions", json=chat(f"p{i}")).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(8)))
    assert statuses == [200] * 8
    assert _server.peak_concurrency == 8
    assert all(r.end - r.start >= 1.0 for r in _server.requests)


def test_slots_limit_requests_processed_at_once(_server: LLMServer, http: httpx.Client) -> None:
    """With slots=2 the others queue: at most two requests are processed at the same time."""
    _server.latency = 0.15
    _server.slots = 2
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: http.post("/chat/completions", json=chat(f"s{i}")), range(8)))
    spans = [(r.begin, r.end) for r in _server.requests]
    assert len(spans) == 8
    assert max_overlap(spans) == 2
    assert _server.peak_concurrency > 2  # they all arrived, only two were processed at once


def test_many_keepalive_connections(_server: LLMServer, http: httpx.Client) -> None:
    """64 concurrent keep-alive connections are served in parallel, not one after another."""
    _server.latency = 1.0  # long enough for the 64 to arrive together even on a busy machine
    barrier = threading.Barrier(64)

    def worker(i: int) -> list[int]:
        barrier.wait()
        return [http.post("/chat/completions", json=chat(f"k{i}")).status_code for _ in range(2)]

    with ThreadPoolExecutor(64) as pool:
        statuses = [s for result in pool.map(worker, range(64)) for s in result]
    assert statuses == [200] * 128
    # The server's own record: most of them were in flight at once (a loaded 2-core machine
    # may start a few threads late, so not exactly 64).
    assert _server.peak_concurrency >= 48


def test_drop_is_a_transport_error(_server: LLMServer, http: httpx.Client) -> None:
    """A dropped connection reaches httpx as a transport error and is logged with status 0."""
    _server.script("drop me", drop=True)
    with pytest.raises(httpx.TransportError):
        http.post("/chat/completions", json=chat("drop me"))
    assert [r.status for r in _server.requests] == [0]
    _server.drop_rate = 1.0
    with pytest.raises(httpx.TransportError):
        http.post("/chat/completions", json=chat("random drop"))


def test_stall_triggers_a_client_timeout(_server: LLMServer, http: httpx.Client) -> None:
    """A stalled request outlasts the client's read timeout."""
    _server.script("stall", stall=5)
    with pytest.raises(httpx.ReadTimeout):
        http.post("/chat/completions", json=chat("stall"), timeout=0.2)


def test_error_rate_gives_server_errors(_server: LLMServer, http: httpx.Client) -> None:
    """error_rate=1 answers every request with a 5xx server_error."""
    _server.error_rate = 1.0
    _server.seed = 7
    responses = [http.post("/chat/completions", json=chat(f"e{i}")) for i in range(6)]
    assert {r.status_code for r in responses} <= {500, 502, 503}
    assert all(r.json()["error"]["type"] == "server_error" for r in responses)


def test_invalid_requests_and_auth(_server: LLMServer, http: httpx.Client) -> None:
    """Bad bodies get 400, a wrong key 401 (masked), unknown paths 404, long prompts 400."""
    missing = http.post("/chat/completions", json={"model": MODEL})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"
    assert http.post("/chat/completions", json=chat("x") | {"messages": []}).status_code == 400
    assert http.post("/chat/completions", content=b"{oops").status_code == 400
    assert http.get("/nowhere").json()["error"]["type"] == "invalid_request_error"
    _server.context_window = 5
    too_long = http.post("/chat/completions", json=chat("y" * 100))
    assert too_long.status_code == 400
    assert "exceeds the available context size" in too_long.json()["error"]["message"]
    _server.api_key = "sk-right-key-0001"
    wrong = http.post(
        "/chat/completions", json=chat("z"), headers={"Authorization": "Bearer sk-wrong-key-9999"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-key-9999" not in wrong.text
    right = http.post(
        "/chat/completions", json=chat("z"), headers={"Authorization": "Bearer sk-right-key-0001"}
    )
    assert right.status_code == 200


def test_models_listing_and_request_logs(_server: LLMServer, http: httpx.Client) -> None:
    """GET /v1/models lists the models; it is in all_requests but not in requests."""
    _server.models = ["m1", "m2"]
    listing = http.get("/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["m1", "m2"]
    assert [r.path for r in _server.all_requests] == ["/v1/models"]
    assert _server.requests == []
    _server.reset()
    assert _server.models == [MODEL]
    assert _server.all_requests == []


def test_command_line_ready_stats_and_sigterm() -> None:
    """The script prints READY, serves, reports /_stats, resets, and exits 0 on SIGTERM."""
    command = [sys.executable, str(SERVER_SCRIPT), "--port", "0", "--latency", "0.01"]
    command += ["--model", "m1", "m2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().strip()
        assert re.fullmatch(r"READY http://127\.0\.0\.1:\d+/v1", ready)
        base_url = ready.split()[1]
        root = base_url.removesuffix("/v1")
        with httpx.Client(base_url=base_url, timeout=5, trust_env=False) as client:
            assert [m["id"] for m in client.get("/models").json()["data"]] == ["m1", "m2"]
            body = chat("cli") | {"model": "m2"}
            reply = client.post("/chat/completions", json=body).json()
            assert reply["choices"][0]["message"]["content"] == "ECHO cli"
            stats = client.get(root + "/_stats").json()
            assert stats["requests"] == stats["peak_concurrency"] == 1
            assert stats["statuses"] == {"200": 1}
            [[start, end, status]] = stats["times"]
            assert status == 200
            assert start == stats["first_start"] < end == stats["last_end"]
            assert end - start >= 0.01
            assert client.post(root + "/_reset").status_code == 200
            assert client.get(root + "/_stats").json()["requests"] == 0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert (out, err) == ("", "")
