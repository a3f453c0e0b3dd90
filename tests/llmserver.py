"""Loopback OpenAI-compatible chat-completions server for tests and benchmarks (stdlib only).

In tests: ``LLMServer().start()`` once, then per test ``reset()``, set knobs and ``script()`` rules.
As a process: ``python tests/llmserver.py --port 0 --latency 0.2`` prints ``READY <base_url>``,
serves until SIGTERM/SIGINT, and reports its request log on ``GET /_stats``.

A chat request goes through: auth (401), body checks (400), model (404), the rpm bucket (429),
the context window (400), then the first matching rule and the random faults (a rule's drop or
status wins over a random fault), the stall, the ``slots`` semaphore, the latency, the answer.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import random
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import urlsplit

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
MODELS_PATHS = ("/v1/models", "/models")
SERVER_ERROR_STATUSES = (500, 502, 503)
DEFAULT_MODEL = "test-model"
STREAM_PIECES = 4
# Knobs that reset() restores from the class defaults and the command line sets one to one.
KNOBS = (
    "latency",
    "jitter",
    "slots",
    "rpm",
    "burst",
    "error_rate",
    "drop_rate",
    "stall_rate",
    "stall_seconds",
    "seed",
    "context_window",
    "api_key",
    "llama",
    "prompt_cache",
)
_UNSET = object()
#: The n_ctx llama.cpp's /props reports when the context_window knob is not set.
LLAMA_N_CTX = 4096


def _text(content: Any) -> str:
    """Return the text of a message content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict))
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _messages(body: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Return the well-formed messages of a request body."""
    messages = body.get("messages") if isinstance(body, dict) else None
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def prompt_text(body: dict[str, Any] | None) -> str:
    """Return all message contents of a request body joined with newlines."""
    return "\n".join(_text(m.get("content")) for m in _messages(body))


def last_user_text(body: dict[str, Any] | None) -> str:
    """Return the content of the last user message of a request body ("" if none)."""
    users = [m for m in _messages(body) if m.get("role") == "user"]
    return _text(users[-1].get("content")) if users else ""


def estimate_tokens(text: str) -> int:
    """Return the cheap deterministic token estimate used for usage: len/4, at least 1."""
    return max(1, round(len(text) / 4))


def prompt_tokens(body: dict[str, Any] | None) -> int:
    """Return the estimated prompt tokens of a request body (3 extra per message)."""
    return sum(estimate_tokens(_text(m.get("content"))) + 3 for m in _messages(body))


def format_reset(seconds: float) -> str:
    """Format a duration like OpenAI's x-ratelimit-reset-* headers: 6m0s, 1s, 1.5s, 120ms."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    out = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        out = f"{minutes}m{out}"
    return f"{hours}h{out}" if hours else out


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Return an OpenAI error JSON body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def default_error(status: int) -> dict[str, Any]:
    """Return the error body a scripted status sends when its rule gives none."""
    phrase = BaseHTTPRequestHandler.responses.get(status, ("Error",))[0]
    message = f"{phrase} (scripted status {status} from the loopback server)"
    if status == 429:
        return error_body(message, "requests", code="rate_limit_exceeded")
    if status == 401:
        return error_body(message, "invalid_request_error", code="invalid_api_key")
    return error_body(message, "server_error" if status >= 500 else "invalid_request_error")


def _model_not_found(model: str) -> dict[str, Any]:
    """Return OpenAI's 404 body for an unknown model."""
    message = f"The model `{model}` does not exist or you do not have access to it."
    return error_body(message, "invalid_request_error", code="model_not_found")


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    start: float
    end: float = 0.0
    status: int = 0
    begin: float = 0.0  # when processing began, i.e. after waiting for a `slots` semaphore
    query: str = ""

    @property
    def prompt(self) -> str:
        """All message contents joined with newlines."""
        return prompt_text(self.body)

    @property
    def last_user(self) -> str:
        """The content of the last user message."""
        return last_user_text(self.body)


@dataclass
class Rule:
    """One scripted behaviour; the first matching rule that is not exhausted wins."""

    match: str | Callable[[dict[str, Any]], bool] | None
    reply: str | Callable[[dict[str, Any]], str] | None = None
    status: int = 200
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    latency: float | None = None
    finish_reason: str = "stop"
    drop: bool = False
    stall: float | None = None
    times: int | None = None
    tool_calls: list[dict[str, Any]] | None = None
    raw: str | None = None  # send this text verbatim as the body (malformed-response tests)
    hits: int = field(default=0, init=False, compare=False)

    def matches(self, body: dict[str, Any], prompt: str) -> bool:
        """Whether the rule is not exhausted and matches this request."""
        if self.times is not None and self.hits >= self.times:
            return False
        if self.match is None:
            return True
        return self.match in prompt if isinstance(self.match, str) else bool(self.match(body))

    def text(self, body: dict[str, Any]) -> str:
        """Return the assistant text for this request."""
        if self.reply is None:
            return "ECHO " + last_user_text(body)
        return self.reply(body) if callable(self.reply) else self.reply


class Fate(NamedTuple):
    """What happens to one chat request besides its answer."""

    drop: bool
    error: int | None  # a random 5xx status
    pause: float  # stall before processing
    delay: float  # latency with jitter, inside the slot


class LLMServer:
    """A scriptable OpenAI-compatible chat-completions server on a loopback port."""

    latency: float = 0.0
    jitter: float = 0.0
    slots: int | None = None
    rpm: float | None = None
    burst: float = 1.0  # at least one request
    error_rate: float = 0.0
    drop_rate: float = 0.0
    stall_rate: float = 0.0
    stall_seconds: float = 30.0
    seed: int | None = None
    context_window: int | None = None
    api_key: str | None = None
    llama: bool = False  # also answer llama.cpp's /props, /tokenize and /apply-template
    # Report usage.prompt_tokens_details.cached_tokens: the estimated tokens of the longest
    # prefix this prompt shares with an earlier one (as a provider's prompt cache would).
    prompt_cache: bool = False
    models: list[str]

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind the listening socket now (port 0 picks a free port); serve after start()."""
        self._lock = threading.Lock()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.llm = self
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self.rules: list[Rule] = []
        self.requests: list[RecordedRequest] = []
        self.all_requests: list[RecordedRequest] = []
        self.peak_concurrency = 0
        self._in_flight = 0
        self._generation = 0
        self._wake = threading.Event()
        self._sem: threading.Semaphore | None = None
        self._sem_size: int | None = None
        self._rng = random.Random()
        self._rng_seed: object = _UNSET
        self._bucket: tuple[float, float] | None = None  # (rpm, capacity) the bucket was made for
        self._tokens = 0.0
        self._bucket_at = 0.0
        self.reset()

    @property
    def url(self) -> str:
        """The server root, e.g. http://127.0.0.1:PORT."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (root + /v1)."""
        return self.url + "/v1"

    def start(self) -> LLMServer:
        """Serve in a daemon thread; return self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and wake stalled requests."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        self._wake.set()

    def __enter__(self) -> LLMServer:
        """Start serving."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop serving."""
        self.stop()

    def script(
        self,
        match: str | Callable[[dict[str, Any]], bool] | None = None,
        reply: str | Callable[[dict[str, Any]], str] | None = None,
        **kw: Any,
    ) -> Rule:
        """Append a Rule(match, reply, **kw) and return it."""
        rule = Rule(match, reply, **kw)
        with self._lock:
            self.rules.append(rule)
        return rule

    def reset(self) -> None:
        """Clear rules and the request log and restore every knob to its default."""
        with self._lock:
            for knob in KNOBS:
                setattr(self, knob, getattr(LLMServer, knob))
            self.models = [DEFAULT_MODEL]
            self.rules.clear()
            self._rng_seed = _UNSET
            self._clear_locked()

    def clear(self) -> None:
        """Clear the request log, counters and rpm bucket, keeping knobs and rules."""
        with self._lock:
            self._clear_locked()

    def _clear_locked(self) -> None:
        self.requests.clear()
        self.all_requests.clear()
        self._prompts: list[str] = []
        self.peak_concurrency = 0
        self._in_flight = 0
        self._bucket = None
        # Requests still running from before (e.g. stalled) wake up and are no longer recorded.
        self._generation += 1
        self._wake.set()
        self._wake = threading.Event()

    def count(self, match: str | None = None) -> int:
        """Return how many chat requests had a prompt containing match (all if None)."""
        with self._lock:
            return sum(1 for r in self.requests if match is None or match in r.prompt)

    def stats(self) -> dict[str, Any]:
        """Return the request log summary served on GET /_stats."""
        with self._lock:
            reqs = list(self.requests)
            chats = {id(r) for r in reqs}
            others = [r for r in self.all_requests if id(r) not in chats]
            peak = self.peak_concurrency
        return {
            "requests": len(reqs),
            # Requests that are not chats (model list, probes), the server's own /_ paths aside.
            "other_requests": sum(1 for r in others if not r.path.startswith("/_")),
            "peak_concurrency": peak,
            "statuses": dict(Counter(str(r.status) for r in reqs)),
            "first_start": min((r.start for r in reqs), default=None),
            "last_end": max((r.end for r in reqs), default=None),
            "times": [[r.start, r.end, r.status] for r in reqs],
        }

    # ---- called from the handler threads ----

    def _arrive(self, chat: bool) -> tuple[int, threading.Event]:
        with self._lock:
            if chat:
                self._in_flight += 1
                self.peak_concurrency = max(self.peak_concurrency, self._in_flight)
            return self._generation, self._wake

    def _depart(self, rec: RecordedRequest, generation: int, chat: bool) -> None:
        with self._lock:
            if generation != self._generation:
                return
            self.all_requests.append(rec)
            if chat:
                self._in_flight -= 1
                self.requests.append(rec)

    def _auth_error(self, headers: dict[str, str]) -> dict[str, Any] | None:
        got = headers.get("authorization", "")
        if self.api_key is None or got == f"Bearer {self.api_key}":
            return None
        token = got.removeprefix("Bearer").strip()
        shown = f"{token[:3]}...{token[-4:]}" if len(token) >= 12 else "***"
        message = (
            f"Incorrect API key provided: {shown}."
            if token
            else "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return error_body(message, "invalid_request_error", code="invalid_api_key")

    def _take_request(self) -> tuple[float | None, dict[str, str]]:
        """Take one request from the rpm bucket: (seconds to wait if refused, rate headers)."""
        rpm = self.rpm
        if not rpm:
            return None, {}
        rate, cap, now = rpm / 60.0, max(float(self.burst), 1.0), time.monotonic()
        with self._lock:
            if self._bucket != (rpm, cap):
                self._bucket, self._tokens, self._bucket_at = (rpm, cap), cap, now
            self._tokens = min(cap, self._tokens + (now - self._bucket_at) * rate)
            self._bucket_at = now
            wait = None if self._tokens >= 1 else (1 - self._tokens) / rate
            if wait is None:
                self._tokens -= 1
            tokens = self._tokens
        return wait, {
            "x-ratelimit-limit-requests": str(int(rpm)) if float(rpm).is_integer() else str(rpm),
            "x-ratelimit-remaining-requests": str(int(tokens)),
            "x-ratelimit-reset-requests": format_reset((cap - tokens) / rate),
        }

    def _cached_tokens(self, prompt: str, n_prompt: int) -> int:
        """Tokens of the longest prefix `prompt` shares with an earlier prompt (then kept)."""
        with self._lock:
            shared = max((_common_prefix(prompt, seen) for seen in self._prompts), default=0)
            self._prompts.append(prompt)
        return min(n_prompt, shared // 4)

    def _match(self, body: dict[str, Any], prompt: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(body, prompt):
                    rule.hits += 1
                    return rule
        return None

    def _fate(self, rule: Rule | None) -> Fate:
        """Draw the random faults and timings of one request; the rule's own settings win."""
        with self._lock:
            if self._rng_seed is _UNSET or self._rng_seed != self.seed:
                self._rng, self._rng_seed = random.Random(self.seed), self.seed
            rng = self._rng
            drop = bool(self.drop_rate) and rng.random() < self.drop_rate
            error = None
            if self.error_rate and rng.random() < self.error_rate:
                error = rng.choice(SERVER_ERROR_STATUSES)
            stall = bool(self.stall_rate) and rng.random() < self.stall_rate
            jitter = rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        pause = self.stall_seconds if stall else 0.0
        latency = self.latency
        if rule is not None:
            drop = drop or rule.drop
            pause = pause if rule.stall is None else rule.stall
            latency = latency if rule.latency is None else rule.latency
        return Fate(drop, error, pause, max(0.0, latency + jitter))

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        """Hold one of the `slots` processing places (none to hold when slots is None)."""
        with self._lock:
            if self.slots is not None and (self._sem is None or self._sem_size != self.slots):
                self._sem, self._sem_size = threading.Semaphore(max(1, self.slots)), self.slots
            sem = self._sem if self.slots is not None else None
        with sem or contextlib.nullcontext():
            yield


def _reject(llm: LLMServer, rec: RecordedRequest) -> tuple[int, dict[str, Any]] | None:
    """Return (status, error body) if a chat request is unauthorized or malformed."""
    if err := llm._auth_error(rec.headers):
        return 401, err
    body, invalid = rec.body, "invalid_request_error"
    if body is None:
        return 400, error_body("We could not parse the JSON body of your request.", invalid)
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        return 400, error_body("you must provide a model parameter", invalid)
    if not isinstance(messages, list):
        message = "Missing required parameter: 'messages'."
        return 400, error_body(
            message, invalid, param="messages", code="missing_required_parameter"
        )
    if not messages:
        message = "Invalid 'messages': empty array. Expected an array with minimum length 1."
        return 400, error_body(message, invalid, param="messages", code="empty_array")
    if model not in llm.models:
        return 404, _model_not_found(model)
    return None


def _rate_limited(limit: str, wait: float) -> dict[str, Any]:
    """Return OpenAI's 429 body for the requests-per-minute limit."""
    message = (
        f"Rate limit reached for requests in organization org-loopback on requests per min "
        f"(RPM): Limit {limit}, Used {limit}, Requested 1. Please try again in "
        f"{format_reset(wait)}."
    )
    return error_body(message, "requests", code="rate_limit_exceeded")


def _context_exceeded(n_prompt: int, window: int) -> dict[str, Any]:
    """Return llama.cpp's 400 body for a prompt longer than the context window."""
    message = (
        f"request ({n_prompt} tokens) exceeds the available context size ({window} tokens), "
        "try increasing it"
    )
    return {
        "error": {
            "code": 400,
            "message": message,
            "type": "exceed_context_size_error",
            "n_prompt_tokens": n_prompt,
            "n_ctx": window,
        }
    }


def _tool_calls(calls: list[dict[str, Any]], cid: int) -> list[dict[str, Any]]:
    """Fill in ids, types and JSON-string arguments of scripted tool calls."""
    out = []
    for i, call in enumerate(calls):
        function = {"arguments": ""} | dict(call.get("function", {}))
        if not isinstance(function["arguments"], str):
            function["arguments"] = json.dumps(function["arguments"])
        call_id, type_ = call.get("id", f"call_{cid}_{i}"), call.get("type", "function")
        out.append({"id": call_id, "type": type_, "function": function})
    return out


def _common_prefix(a: str, b: str) -> int:
    """Return the length of the longest common prefix of two strings."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def build_completion(
    body: dict[str, Any], rule: Rule | None, cid: int, n_prompt: int, cached: int | None = None
) -> dict[str, Any]:
    """Return the chat.completion body answering a request (`cached`: prompt-cache tokens)."""
    text = rule.text(body) if rule is not None else "ECHO " + last_user_text(body)
    finish = rule.finish_reason if rule is not None else "stop"
    calls = _tool_calls(rule.tool_calls, cid) if rule and rule.tool_calls is not None else None
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    n = body["n"] if isinstance(body.get("n"), int) and body["n"] > 1 else 1
    choices, n_completion = [], 0
    for i in range(n):
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        reason = "tool_calls"
        if calls is not None:
            message["tool_calls"] = calls
            n_completion += estimate_tokens(json.dumps(calls))
        else:
            content, reason = (text if i == 0 else f"{text} #{i}"), finish
            if isinstance(limit, int) and limit > 0 and estimate_tokens(content) > limit:
                content, reason = content[: limit * 4], "length"
            message["content"] = content
            n_completion += estimate_tokens(content)
        choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": reason})
    usage: dict[str, Any] = {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_completion,
        "total_tokens": n_prompt + n_completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {
        "id": f"chatcmpl-{cid}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_loopback",
        "choices": choices,
        "usage": usage,
    }


def stream_events(completion: dict[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    """Return the chat.completion.chunk events that stream a chat.completion body."""
    base: dict[str, Any] = {"id": completion["id"], "object": "chat.completion.chunk"}
    base |= {k: completion[k] for k in ("created", "model", "system_fingerprint")}
    if include_usage:
        base["usage"] = None

    def chunk(index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return base | {"choices": [choice]}

    events = []
    for choice in completion["choices"]:
        i, message = choice["index"], choice["message"]
        calls = message.get("tool_calls") or []
        events.append(chunk(i, {"role": "assistant", "content": None if calls else ""}))
        for j, call in enumerate(calls):
            opening = {"name": call["function"].get("name", ""), "arguments": ""}
            events.append(chunk(i, {"tool_calls": [call | {"index": j, "function": opening}]}))
            arguments = {"arguments": call["function"]["arguments"]}
            events.append(chunk(i, {"tool_calls": [{"index": j, "function": arguments}]}))
        text = message["content"] or ""
        size = max(1, math.ceil(len(text) / STREAM_PIECES))
        events.extend(chunk(i, {"content": text[k : k + size]}) for k in range(0, len(text), size))
        events.append(chunk(i, {}, choice["finish_reason"]))
    if include_usage:
        events.append(base | {"choices": [], "usage": completion["usage"]})
    return events


def llama_reply(
    llm: LLMServer, method: str, path: str, body: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Return llama.cpp's answer on /props, /tokenize or /apply-template (None: not one of them).

    Tokens follow this server's own estimate, so the counts agree with its context-window check.
    """
    if method == "GET" and path == "/props":
        n_ctx = llm.context_window or LLAMA_N_CTX
        return {"default_generation_settings": {"n_ctx": n_ctx}, "total_slots": llm.slots or 1}
    if method != "POST" or not isinstance(body, dict):
        return None
    if path == "/tokenize":
        content = _text(body.get("content"))
        return {"tokens": list(range(estimate_tokens(content) if content else 0))}
    if path == "/apply-template":
        turns = (
            f"<|im_start|>{m.get('role')}\n{_text(m.get('content'))}<|im_end|>\n"
            for m in _messages(body)
        )
        return {"prompt": "".join(turns) + "<|im_start|>assistant\n"}
    return None


class _HTTPServer(ThreadingHTTPServer):
    """Thread-per-connection HTTP server that tolerates clients hanging up."""

    daemon_threads = True
    request_queue_size = 1024
    llm: LLMServer

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about connections the client closed; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Request handler speaking the OpenAI chat-completions wire format."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "loopback-llm/1.0"
    sys_version = ""
    server: _HTTPServer
    _pending: tuple[RecordedRequest, int, bool] | None = None

    def log_message(self, *args: Any) -> None:
        """Stay silent: no per-request log lines."""

    def do_GET(self) -> None:
        """Serve a GET request."""
        self._serve()

    def do_POST(self) -> None:
        """Serve a POST request."""
        self._serve()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        start = time.monotonic()
        llm = self.server.llm
        target = urlsplit(self.path)
        path = target.path
        headers = {k.lower(): v for k, v in self.headers.items()}
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        chat = self.command == "POST" and path in CHAT_PATHS
        generation, wake = llm._arrive(chat)
        body = body if isinstance(body, dict) else None
        rec = RecordedRequest(
            self.command, path, headers, body, start, begin=start, query=target.query
        )
        self._pending = (rec, generation, chat)
        try:
            if chat:
                self._chat(llm, rec, wake)
            else:
                self._other(llm, rec)
        except (ConnectionError, TimeoutError):
            rec.status = 0
            self.close_connection = True
        except Exception as exc:  # a bug, e.g. in a scripted callable: show it and answer 500
            traceback.print_exc()
            self.close_connection = True
            if rec.status == 0:
                self._send(rec, 500, error_body(f"loopback server bug: {exc!r}", "server_error"))
        finally:
            self._commit()

    def _commit(self) -> None:
        """Log the current request (called just before its last bytes go out)."""
        # Logging before the final write means a client that has read its response always
        # finds the request in the log; the status is set to 0 afterwards if the write fails.
        if self._pending is not None:
            rec, generation, chat = self._pending
            self._pending = None
            rec.end = time.monotonic()
            self.server.llm._depart(rec, generation, chat)

    def _send(
        self, rec: RecordedRequest, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        rec.status = status
        self._commit()
        self.wfile.write(data)

    def _send_stream(
        self, rec: RecordedRequest, events: list[dict[str, Any]], headers: dict[str, str]
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        for event in events:
            data = f"data: {json.dumps(event)}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        rec.status = 200
        self._commit()
        done = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))

    def _drop(self) -> None:
        """Close the connection without a response."""
        self.close_connection = True
        self._commit()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _other(self, llm: LLMServer, rec: RecordedRequest) -> None:
        path, method = rec.path, rec.method
        if llm.llama and (reply := llama_reply(llm, method, path, rec.body)) is not None:
            return self._send(rec, 200, reply)
        if path == "/_stats" and method == "GET":
            return self._send(rec, 200, llm.stats())
        if path == "/_reset" and method == "POST":
            llm.clear()
            return self._send(rec, 200, {"ok": True})
        models_path = path in MODELS_PATHS or path.startswith(tuple(p + "/" for p in MODELS_PATHS))
        if method != "GET" or not models_path:
            message = f"Invalid URL ({method} {path})"
            return self._send(rec, 404, error_body(message, "invalid_request_error"))
        if err := llm._auth_error(rec.headers):
            return self._send(rec, 401, err)
        cards = {
            m: {"id": m, "object": "model", "created": 0, "owned_by": "loopback"}
            for m in llm.models
        }
        if path in MODELS_PATHS:
            return self._send(rec, 200, {"object": "list", "data": list(cards.values())})
        name = path.split("/models/", 1)[-1]
        if name not in cards:
            return self._send(rec, 404, _model_not_found(name))
        return self._send(rec, 200, cards[name])

    def _chat(self, llm: LLMServer, rec: RecordedRequest, wake: threading.Event) -> None:
        if rejected := _reject(llm, rec):
            return self._send(rec, *rejected)
        wait, headers = llm._take_request()
        if wait is not None:
            retry = {
                "retry-after": str(math.ceil(wait)),
                "retry-after-ms": str(math.ceil(wait * 1000)),
            }
            limit = headers["x-ratelimit-limit-requests"]
            return self._send(rec, 429, _rate_limited(limit, wait), headers | retry)
        body = rec.body or {}
        n_prompt = prompt_tokens(body)
        if llm.context_window is not None and n_prompt > llm.context_window:
            return self._send(rec, 400, _context_exceeded(n_prompt, llm.context_window), headers)
        rule = llm._match(body, rec.prompt)
        fate = llm._fate(rule)
        if rule is not None:  # rule headers go out verbatim and replace ours of the same name
            replaced = {name.lower() for name in rule.headers}
            headers = {k: v for k, v in headers.items() if k not in replaced} | rule.headers
        if fate.pause:
            wake.wait(fate.pause)
        with llm._slot():
            rec.begin = time.monotonic()
            if fate.delay:
                time.sleep(fate.delay)
            self._answer(llm, rec, rule, fate, n_prompt, headers)
        return None

    def _answer(
        self,
        llm: LLMServer,
        rec: RecordedRequest,
        rule: Rule | None,
        fate: Fate,
        n_prompt: int,
        headers: dict[str, str],
    ) -> None:
        body = rec.body or {}
        if fate.drop:
            return self._drop()
        if rule is not None and rule.raw is not None:
            return self._send(rec, rule.status, rule.raw, headers)
        if rule is not None and rule.status >= 400:
            err = rule.error or default_error(rule.status)
            return self._send(rec, rule.status, err if "error" in err else {"error": err}, headers)
        if fate.error is not None:
            message = "The server had an error while processing your request."
            return self._send(rec, fate.error, error_body(message, "server_error"), headers)
        cid = next(llm._ids)
        cached = llm._cached_tokens(rec.prompt, n_prompt) if llm.prompt_cache else None
        completion = build_completion(body, rule, cid, n_prompt, cached)
        headers = {"x-request-id": f"req_loopback_{cid}"} | headers
        if body.get("stream") is True:
            options = body.get("stream_options")
            with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return self._send_stream(
                rec, stream_events(completion, include_usage=with_usage), headers
            )
        return self._send(rec, 200 if rule is None else rule.status, completion, headers)


def main(argv: list[str] | None = None) -> int:
    """Run the server from the command line until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    kinds = {
        "slots": int,
        "seed": int,
        "context_window": int,
        "api_key": str,
        "llama": int,
        "prompt_cache": int,
    }
    for knob in KNOBS:
        flag = "--" + knob.replace("_", "-")
        parser.add_argument(flag, type=kinds.get(knob, float), default=getattr(LLMServer, knob))
    parser.add_argument("--model", action="extend", nargs="+", dest="models", metavar="NAME")
    args = parser.parse_args(argv)

    server = LLMServer(args.host, args.port)
    for knob in KNOBS:
        setattr(server, knob, getattr(args, knob))
    server.models = args.models or [DEFAULT_MODEL]
    return serve_until_signalled(server)


def serve_until_signalled(server: LLMServer) -> int:
    """Start, print `READY <base_url>`, serve until SIGTERM or SIGINT, stop (as a process)."""
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    server.start()
    print(f"READY {server.base_url}", flush=True)
    while not done.wait(0.2):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
