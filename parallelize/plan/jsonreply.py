"""Find the JSON in a model's reply: bare, fenced in ```json, or wrapped in prose.

Models asked for "JSON only" still add code fences, a sentence before or after, or a thinking
block. Shared by every step that asks a model for structured output (judge, scorer, merges).
`parse_json_object` wants an object (verdicts, scores); `parse_json_reply` takes any document
(JSON merges may answer arrays) and says exactly what is wrong, for a repair prompt.

Both read strict RFC 8259 JSON only: Python's `json` also takes `NaN` and `Infinity`, and turns
`1e999` into infinity, none of which can be written back as JSON, so such a reply is refused
(and repaired) here rather than breaking the merged document later.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: ```json ... ``` (or a bare ``` fence), non-greedy so several fences are found one by one.
FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript)?[ \t]*\n?(.*?)```", re.DOTALL)
#: Reasoning models may think aloud before answering; what is inside is never the answer.
THINKING = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.DOTALL | re.IGNORECASE)
#: Give up scanning for an object start after this many candidates (replies are short).
MAX_SCAN_STARTS = 200
#: Where a document may start inside prose.
OPENERS = "{["


class JSONReplyError(ValueError):
    """The reply holds no usable JSON; the message says why."""


class NotStrictJSON(ValueError):
    """A number JSON cannot carry: NaN, Infinity, or one too large to write back."""


def _refuse_constant(name: str) -> Any:
    raise NotStrictJSON(f"{name} is not a JSON value (JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotStrictJSON(f"the number {text[:40]} is too large to be a finite number")
    return value


def _bounded_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # past sys.get_int_max_str_digits(): it could not be written back
        raise NotStrictJSON(f"an integer of {len(text)} digits is too large") from None


#: Python's decoder, minus what RFC 8259 does not allow or what cannot be written back.
STRICT = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int
)


def loads_strict(text: str) -> Any:
    """`json.loads` for RFC 8259 JSON only; NotStrictJSON for NaN, Infinity or 1e999."""
    return STRICT.decode(text)


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a reply, looking inside code fences first, then anywhere."""
    cleaned = THINKING.sub("", text).strip()
    for candidate in (*FENCE.findall(cleaned), cleaned):
        found = _first_object(candidate.strip())
        if found is not None:
            return found
    shown = " ".join(text.split())[:120]
    raise JSONReplyError(f"no JSON object in the reply: {shown!r}" if shown else "empty reply")


def parse_json_reply(text: str) -> Any:
    """The JSON document in a reply: the whole text, a fenced block, or the first {...}/[...]."""
    cleaned = THINKING.sub("", text).strip()
    if not cleaned:
        raise JSONReplyError("the reply is empty")
    strict: NotStrictJSON | None = None
    try:
        return loads_strict(cleaned)
    except json.JSONDecodeError as exc:
        first_error = exc
    except NotStrictJSON as exc:
        return _refused(exc)
    for block in FENCE.findall(cleaned):
        try:
            return loads_strict(block)
        except json.JSONDecodeError:
            continue
        except NotStrictJSON as exc:
            strict = strict or exc
    found = _first_document(cleaned)
    if found is not None:
        return found
    if strict is not None:
        return _refused(strict)
    where = f"line {first_error.lineno} column {first_error.colno}"
    problem = first_error.msg.removesuffix(" at")  # "Unterminated string starting at"
    raise JSONReplyError(f"not valid JSON: {problem} at {where}")


def _refused(exc: NotStrictJSON) -> Any:
    raise JSONReplyError(f"not valid JSON: {exc}") from None


def _first_object(text: str) -> dict[str, Any] | None:
    """Decode the first `{...}` in `text` that parses as a JSON object."""
    try:
        whole = loads_strict(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return whole
    decoder = STRICT
    start = text.find("{")
    scanned = 0
    while start != -1 and scanned < MAX_SCAN_STARTS:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
        scanned += 1
    return None


def _first_document(text: str) -> Any | None:
    """The first complete JSON object or array inside surrounding prose, if any."""
    starts = [i for i, char in enumerate(text) if char in OPENERS][:MAX_SCAN_STARTS]
    for start in starts:
        try:
            value, _end = STRICT.raw_decode(text, start)
        except ValueError:  # not JSON here, or not strict JSON: look further
            continue
        return value
    return None
