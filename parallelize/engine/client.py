"""The one way requests leave: OpenAI chat completions over `transport`'s pools.

The endpoint (base URL, key, Azure), the request body and the parameters some servers refuse,
and the reply parsed into a Completion. The openai SDK is not used here: importing it costs
~0.75 s of start-up. Errors become our own types, and the headers that drive retries and pacing
come back with every reply.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from ..defaults import DEFAULT_TIMEOUT
from ..errors import (
    ContextOverflowError,
    EndpointError,
    FatalLLMError,
    LLMError,
    UnreachableError,
)
from ..masking import for_people, mask, register_secret
from ..records import ChatRequest, Completion
from .reply import parse_completion
from .retry import RETRYABLE_STATUSES, rate_limit_reset_seconds, retry_after_seconds
from .transport import CONNECT_TIMEOUT, ChatPools, ConnectFailed, Reply, timeouts

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
CONTEXT_OVERFLOW = re.compile(
    r"context length|context size|context window|maximum context|context_length_exceeded"
    r"|too many tokens|prompt is too long",
    re.IGNORECASE,
)
UNSUPPORTED_PARAM = re.compile(
    r"unsupported (parameter|value)|unrecognized request argument|not supported with this model"
    r"|does not support|unknown parameter|extra inputs are not permitted",
    re.IGNORECASE,
)
#: A 429 that no wait cures: the account has no quota left (OpenAI's `insufficient_quota`).
QUOTA_EXHAUSTED = re.compile(r"insufficient_quota|exceeded your current quota", re.IGNORECASE)
#: Seconds before the one retry of a first connection that failed: a server still binding its
#: port gets a moment, and a wrong URL or a stopped server is said within seconds, not after a
#: minute of retries.
FIRST_CONTACT_RETRY = 1.0
#: Base URLs that have replied (any status) in this process: their failed connections are
#: ordinary retryable failures (a restart, a blip), no longer a sign of a wrong URL.
_ANSWERED: set[str] = set()
#: How to adapt a request whose parameter a model rejects: drop it, or rename it.
PARAM_ADAPTATIONS: dict[str, str | None] = {
    "max_tokens": "max_completion_tokens",
    "temperature": None,
    "top_p": None,
    "seed": None,
    "response_format": None,  # no JSON mode: the prompt's instructions and our validation remain
    "parallel_tool_calls": None,  # the calls of one reply still run at once
    "tool_choice": None,  # the last tool round asks for an answer without it
}


@dataclass(frozen=True)
class Endpoint:
    """Where requests go and how they authenticate; the key never appears in a repr."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    api_version: str | None = None

    @classmethod
    def resolve(
        cls, base_url: str | None = None, *, api_key_env: str = "OPENAI_API_KEY"
    ) -> Endpoint:
        """Endpoint from flags, then OPENAI_BASE_URL / OPENAI_API_KEY; error when neither is set."""
        url = base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
        key = os.environ.get(api_key_env) or None
        check_key(key, api_key_env)
        if not url and not key:
            raise EndpointError(
                "no model endpoint configured",
                hint=f"set {api_key_env} for OpenAI, or OPENAI_BASE_URL / --base-url for another "
                "OpenAI-compatible server such as http://localhost:11434/v1",
            )
        return cls((url or OPENAI_BASE_URL).rstrip("/"), key, os.environ.get("OPENAI_API_VERSION"))

    def __repr__(self) -> str:
        return f"Endpoint(base_url={mask(self.base_url)!r}, api_version={self.api_version!r})"

    def __post_init__(self) -> None:
        register_secret(self.api_key)
        user_info = urlsplit(self.base_url).netloc.rpartition("@")[0]
        for part in (user_info, *user_info.split(":")):
            register_secret(part)
            register_secret(unquote(part))

    @property
    def is_openai(self) -> bool:
        return self.base_url.startswith(OPENAI_BASE_URL)

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": "parallelize"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
            if ".azure.com" in self.base_url:
                headers["api-key"] = self.api_key
        return headers


def check_key(key: str | None, variable: str) -> None:
    """A key with whitespace or control characters (a .env saved on Windows ends in CR) would be
    refused by the HTTP layer with the key inside the message: say so first, never showing it."""
    if key and (
        key != key.strip() or any(ord(c) < 32 or c.isspace() or ord(c) == 127 for c in key)
    ):
        raise EndpointError(
            f"{variable} contains whitespace or a control character",
            hint=f"remove it from {variable}; a .env file saved with Windows line endings ends "
            "each value with a carriage return",
        )


class ChatClient:
    """One shared client for every worker: a chat request in; text, usage, status, headers out."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        params = {"api-version": endpoint.api_version} if endpoint.api_version else None
        self._query = f"?{urlencode(params)}" if params else ""
        self._chat_url = f"{endpoint.base_url}/chat/completions{self._query}"
        host = urlsplit(endpoint.base_url).netloc.rpartition("@")[2]
        self._headers = [
            (b"Host", host.encode("idna")),
            (b"Accept", b"application/json"),
            *((k.encode(), v.encode()) for k, v in endpoint.headers().items()),
        ]
        # TLS is set up once, and only for https (a loopback server needs none), with the
        # first request: a run answered by the cache opens nothing.
        tls = endpoint.base_url.startswith("https:")
        self._pools = ChatPools(self._chat_url, tls=tls)
        # (model, parameter) -> its replacement (None: drop it); learned per model.
        self._adapted: dict[tuple[str, str], str | None] = {}
        #: Set once a first contact failed twice: later calls say so without waiting again.
        self._unreachable = False
        #: The model list's reply: asked once per client (which model, and its window).
        self._models_url = f"{endpoint.base_url}/models{self._query}"
        self._models: tuple[int | None, Any] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pools.close()

    def complete(self, request: ChatRequest, *, timeout: float | None = None) -> Completion:
        """Send one chat request; raises LLMError (retryable or not) on failure.

        `timeout` shortens this call's timeout (a deadline near its end); it never lengthens it.
        """
        body = self._adapt(request.body())
        limit = self.timeout
        if timeout is not None and timeout < self.timeout:
            limit = max(timeout, 0.001)
        started = time.monotonic()
        reply = self._send("POST", self._chat_url, body, limit)
        if reply.status >= 400:
            error = _status_error(reply, body)
            adapted = self._learn_adaptation(error, body)
            if adapted:
                return self.complete(request, timeout=timeout)
            raise _refused_tools(error, body, self.endpoint) or error
        return parse_completion(
            reply.content,
            status=reply.status,
            headers=reply.headers,
            latency=time.monotonic() - started,
            model=body["model"],
            tools_offered=bool(body.get("tools")),
        )

    def endpoint_for(self, request: ChatRequest) -> Endpoint:
        """Where this request goes (a router of several endpoints answers per model)."""
        return self.endpoint

    def list_models(self) -> list[str]:
        """Model ids the endpoint lists (empty when it does not answer)."""
        payload = self._metadata("GET", self._models_url)
        listed = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(listed, list):
            return []
        ids = (m.get("id") for m in listed[:1000] if isinstance(m, dict))
        return [for_people(i, 200) for i in ids if isinstance(i, str) and i.strip()]

    def get_json(self, path: str) -> Any:
        """GET a JSON document relative to the server root (e.g. llama.cpp `/props`), or None."""
        return self._metadata("GET", self._root_url(path))

    def post_json(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST JSON relative to the server root (e.g. llama.cpp `/tokenize`); None on failure."""
        return self._metadata("POST", self._root_url(path), dict(body))

    def metadata(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int | None, Any]:
        """A side request relative to the server root: its HTTP status (None: no reply came)
        and its JSON (None but for a 200 with JSON). A 404 says the server has no such thing;
        a failed exchange says nothing."""
        return self._metadata_reply(method, self._root_url(path), body)

    def _root_url(self, path: str) -> str:
        root = re.sub(r"/v1/?$", "", self.endpoint.base_url)
        return f"{root}/{path.lstrip('/')}{self._query}"

    def _metadata(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> Any:
        """A side request's JSON reply, or None when it fails (it is only a hint); an endpoint
        that cannot be reached at all is said at once, not hidden behind a fallback."""
        return self._metadata_reply(method, url, body)[1]

    def _metadata_reply(
        self, method: str, url: str, body: Mapping[str, Any] | None
    ) -> tuple[int | None, Any]:
        models = method == "GET" and url == self._models_url
        if models and self._models is not None:  # it answers two questions: which, how big
            return self._models
        try:
            reply = self._send(method, url, body, self.timeout if body else CONNECT_TIMEOUT)
        except UnreachableError:
            raise
        except LLMError:
            return None, None
        try:
            answer = reply.status, reply.json() if reply.status == 200 else None
        except ValueError:
            answer = reply.status, None
        if models:
            self._models = answer
        return answer

    def _send(self, method: str, url: str, body: Mapping[str, Any] | None, limit: float) -> Reply:
        """One exchange; before the endpoint's first reply, a failed connection is retried once
        after FIRST_CONTACT_RETRY and then raises UnreachableError (exit 2)."""
        headers = list(self._headers)
        content = b""
        if body is not None:
            content = encode_body(body)
            headers += [
                (b"Content-Type", b"application/json"),
                (b"Content-Length", str(len(content)).encode()),
            ]
        send = timeouts(limit)
        try:
            return self._exchange(method, url, headers, content, send)
        except ConnectFailed as exc:
            if self.endpoint.base_url in _ANSWERED:
                raise  # it answered before: one retryable failure, like any other
            if self._unreachable:  # found so already: no second wait per call
                raise unreachable(self.endpoint, exc) from None
        time.sleep(FIRST_CONTACT_RETRY)
        try:
            return self._exchange(method, url, headers, content, send)
        except ConnectFailed as exc:
            if self.endpoint.base_url in _ANSWERED:
                raise
            self._unreachable = True
            raise unreachable(self.endpoint, exc) from None

    def _exchange(
        self,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]],
        content: bytes,
        limits: dict[str, float],
    ) -> Reply:
        reply = self._pools.request(method, url, headers, content, limits)
        _ANSWERED.add(self.endpoint.base_url)
        return reply

    def _adapt(self, body: dict[str, Any]) -> dict[str, Any]:
        model = str(body.get("model"))
        with self._lock:
            adapted = {n: r for (m, n), r in self._adapted.items() if m == model}
        for name, replacement in adapted.items():
            if name in body:
                value = body.pop(name)
                if replacement:
                    body.setdefault(replacement, value)
        return body

    def _learn_adaptation(self, error: LLMError, body: Mapping[str, Any]) -> bool:
        """Remember that this model rejects a parameter we know how to drop or rename."""
        if error.status != 400 or not isinstance(error, FatalLLMError):
            return False
        if not UNSUPPORTED_PARAM.search(error.message):
            return False
        for name, replacement in PARAM_ADAPTATIONS.items():
            if name in body and re.search(rf"\b{name}\b", error.message):
                with self._lock:
                    self._adapted[(str(body.get("model")), name)] = replacement
                return True
        return False


def _refused_tools(error: LLMError, body: Mapping[str, Any], endpoint: Endpoint) -> LLMError | None:
    """An endpoint that refuses `tools` altogether fails the run (exit 2), naming it.

    Only the first round can tell: once a request holds `tool` messages the endpoint has
    accepted tools, and a later 400 (a context overflow "in the functions", say) is that error.
    """
    if "tools" not in body or not isinstance(error, FatalLLMError) or error.status != 400:
        return None
    if isinstance(error, ContextOverflowError) or _has_tool_messages(body):
        return None
    if not re.search(r"\btools?\b|function", error.message, re.IGNORECASE):
        return None
    return FatalLLMError(
        f"{public_url(endpoint.base_url)} does not accept tools: {error.message}",
        status=error.status,
        hint="use a server and model with tool calling (llama.cpp: llama-server --jinja), "
        "or remove tools: from the recipe and --tools",
    )


def _has_tool_messages(body: Mapping[str, Any]) -> bool:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    return any(isinstance(m, Mapping) and m.get("role") == "tool" for m in messages)


def public_url(url: str) -> str:
    """`url` as it may be shown: without user-info (a password), query or fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return for_people(urlunsplit((parts.scheme, host, parts.path, "", "")), 300)


def unreachable(endpoint: Endpoint, failed: ConnectFailed) -> UnreachableError:
    """`cannot reach URL: connection refused`, with the fix for that kind of failure."""
    reason = failed.reason
    if reason.startswith("cannot resolve"):
        hint = "check the host name in OPENAI_BASE_URL or --base-url"
    elif reason.startswith("TLS"):
        hint = (
            "check http:// versus https:// in the URL; for a private certificate authority "
            "set SSL_CERT_FILE"
        )
    else:
        hint = "is the server running? check the host and port in OPENAI_BASE_URL or --base-url"
    return UnreachableError(f"cannot reach {public_url(endpoint.base_url)}: {reason}", hint=hint)


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The request as compact UTF-8 JSON; text that cannot be sent fails this call, not a worker."""
    try:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode()
    except (UnicodeEncodeError, ValueError, TypeError, RecursionError) as exc:
        reason = for_people(str(exc), 200)
        raise LLMError(
            f"the request cannot be encoded as JSON: {reason}", retryable=False
        ) from None


def _names_a_parameter(message: str, body: Mapping[str, Any]) -> bool:
    """True when a 400 blames one of our request parameters: every call would fail the same."""
    names = [k for k in body if k not in ("model", "messages")]
    return any(re.search(rf"\b{re.escape(name)}\b", message) for name in names)


def _status_error(reply: Reply, body: Mapping[str, Any]) -> LLMError:
    """Map an HTTP error reply to our error types, keeping the provider's own message."""
    status, headers = reply.status, reply.headers
    message = _error_message(reply)
    text = f"HTTP {status}: {message}"
    if status in (401, 403):
        return FatalLLMError(
            text, status=status, hint="check OPENAI_API_KEY and that it is valid for this endpoint"
        )
    if status == 404:
        return FatalLLMError(text, status=status, hint="check --model and --base-url")
    if status in (400, 413, 422):
        if CONTEXT_OVERFLOW.search(message):
            return ContextOverflowError(
                text,
                status=status,
                hint="the request is larger than the model's context window: "
                "use smaller chunks (--chunk-tokens) or a model with a larger context",
            )
        if UNSUPPORTED_PARAM.search(message) or _names_a_parameter(message, body):
            return FatalLLMError(text, status=status, hint="remove or fix the rejected parameter")
        return LLMError(text, status=status, retryable=False, headers=headers)
    if status == 429 and QUOTA_EXHAUSTED.search(reply.text):
        return FatalLLMError(
            text, status=status, hint="the account is out of quota: check its plan and billing"
        )
    retryable = status in RETRYABLE_STATUSES or status >= 500
    wait = retry_after_seconds(headers)
    if wait is None and status == 429:
        wait = rate_limit_reset_seconds(headers)
    return LLMError(text, status=status, retryable=retryable, retry_after=wait, headers=headers)


def _error_message(reply: Reply) -> str:
    """The server's own words for an error status, as one safe line (masked, capped)."""
    try:
        payload = reply.json()
    except (ValueError, RecursionError):
        return for_people(reply.text) or _phrase(reply.status)
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        error = error.get("message") or error
    text = error if isinstance(error, str) else json.dumps(error if error else payload)
    return for_people(text) or _phrase(reply.status)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"status {status}"
