"""The one reply parser: a chat-completions body in, a typed Completion (or one LLMError) out.

Nothing indexes a reply blindly. A body of the wrong shape anywhere inside is one failed attempt
with a one-line reason (retried per policy); odd `usage` figures are ignored or believed with a
warning, never a crash, a negative cost or an inf. The model's text keeps its bytes, with every
secret in use masked (a server may echo the Authorization header into a "completion").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..errors import LLMError
from ..masking import for_people, mask
from ..records import Completion, ToolCall, Usage

#: Tokens one call may plausibly use: no model's context is larger. More is believed (the server
#: bills it) but warned about, and --max-cost stops the run on it.
PLAUSIBLE_TOKENS = 10_000_000
#: Above this a usage figure is taken as this: it keeps costs finite (no inf, no overflow).
TOKEN_CEILING = 10**15
NO_TOOLS = "the model asked for tools but none were offered"
CACHED_IGNORED = (
    "usage.prompt_tokens_details.cached_tokens is not a count within prompt_tokens: ignored "
    "(no prompt-cache discount counted)"
)


class Malformed(LLMError):
    """A reply whose body is not a chat completion: one failed, retryable attempt."""


def parse_completion(
    content: bytes,
    *,
    status: int,
    headers: Mapping[str, str],
    latency: float,
    model: str,
    tools_offered: bool,
) -> Completion:
    """The reply as a Completion; raises Malformed (retryable) or LLMError for tool-only replies."""
    try:
        payload = json.loads(content)
    except (ValueError, RecursionError):
        raise Malformed(f"malformed reply: not JSON: {_preview(content)}") from None
    choice = _first_choice(payload)
    message = choice.get("message")
    if message is None:
        message = {}
    if not isinstance(message, dict):
        raise Malformed(f"malformed reply: choices[0].message is {_kind(message)}, not an object")
    text = _content_text(message.get("content"))
    tool_calls = tuple(_tool_call(call, i) for i, call in enumerate(_list(message, "tool_calls")))
    if tool_calls and not tools_offered and not text.strip():
        raise LLMError(NO_TOOLS, retryable=False)
    usage, warnings = parse_usage(payload.get("usage"))
    return Completion(
        text=mask(text),
        finish_reason=_label(choice.get("finish_reason"), 64),
        usage=usage,
        model=_label(payload.get("model"), 200) or model,
        status=status,
        headers=headers,
        latency=latency,
        tool_calls=tool_calls,
        warnings=warnings,
    )


def parse_usage(raw: Any) -> tuple[Usage, tuple[str, ...]]:
    """Token counts from a `usage` object: garbage ignored, absurd figures believed and flagged."""
    if raw is None:
        return Usage(), ()
    if not isinstance(raw, dict):
        return Usage(), (f"the server's usage is {_kind(raw)}, not an object: ignored",)
    counts: list[int] = []
    warnings: list[str] = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = raw.get(name)
        if value is None:
            counts.append(0)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            warnings.append(f"usage.{name} is not a number: ignored")
            counts.append(0)
            continue
        if not math.isfinite(value) or value < 0:
            warnings.append(f"usage.{name} is {for_people(repr(value), 40)}: ignored")
            counts.append(0)
            continue
        counts.append(min(int(value), TOKEN_CEILING))
    if sum(counts) > PLAUSIBLE_TOKENS:
        warnings.append(
            f"the server reports {sum(counts):,} tokens for one call: counted as reported "
            "(--max-cost stops the run on it)"
        )
    cached = _cached_tokens(raw.get("prompt_tokens_details"), counts[0])
    if cached is None:
        warnings.append(CACHED_IGNORED)
    return Usage(counts[0], counts[1], cached or 0), tuple(warnings)


def _cached_tokens(details: Any, prompt_tokens: int) -> int | None:
    """`prompt_tokens_details.cached_tokens`: the prompt tokens the provider's prompt cache served
    (OpenAI; llama.cpp reports the same field). None: present but not a count within the prompt,
    so no discount is believed."""
    if details is None:
        return 0
    if not isinstance(details, dict):
        return None
    value = details.get("cached_tokens")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= prompt_tokens:
        return None
    return value


def tool_call_from(raw: Any) -> ToolCall:
    """A cached tool call (the OpenAI shape) as a ToolCall."""
    return _tool_call(raw, 0)


def _first_choice(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise Malformed(f"malformed reply: the body is {_kind(payload)}, not an object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        error = payload.get("error")
        if error is not None:  # some servers put an error in a 200 reply
            raise Malformed(f"the server replied with an error: {for_people(str(error))}")
        raise Malformed("malformed reply: no choices")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise Malformed(f"malformed reply: choices[0] is {_kind(choice)}, not an object")
    return choice


def _content_text(content: Any) -> str:
    """Message content as text; some servers send a list of typed parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "".join(p for p in parts if isinstance(p, str))
    raise Malformed(f"malformed reply: message.content is {_kind(content)}, not text")


def _list(message: dict[str, Any], key: str) -> list[Any]:
    value = message.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"malformed reply: message.{key} is {_kind(value)}, not a list")
    return value


def _tool_call(raw: Any, index: int) -> ToolCall:
    function = raw.get("function") if isinstance(raw, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise Malformed(f"malformed reply: tool_calls[{index}] has no function name")
    arguments = function.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return ToolCall(
        id=_label(raw.get("id"), 256) or f"call_{index}",
        name=_label(name, 256) or "",
        arguments=mask(arguments),
    )


def _label(value: Any, limit: int) -> str | None:
    """A short string field of a reply (model, finish_reason, a tool call's id or name): one
    safe masked line, or None when it is not a string. These are shown and cached too."""
    return for_people(value, limit) or None if isinstance(value, str) else None


def _kind(value: Any) -> str:
    names = {str: "a string", list: "a list", dict: "an object", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else "unknown")


def _preview(content: bytes) -> str:
    return for_people(repr(content[:200].decode("utf-8", errors="replace")), 120)
