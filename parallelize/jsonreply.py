"""Find the JSON object in a model's reply: bare, fenced in ```json, or wrapped in prose.

Models asked for "JSON only" still add code fences, a sentence before or after, or a thinking
block. Shared by every step that asks a model for structured output (judge, scorer, merges).
"""

from __future__ import annotations

import json
import re
from typing import Any

#: ```json ... ``` (or a bare ``` fence), non-greedy so several fences are found one by one.
FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript)?[ \t]*\n?(.*?)```", re.DOTALL)
#: Reasoning models may think aloud before answering; what is inside is never the answer.
THINKING = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.DOTALL | re.IGNORECASE)
#: Give up scanning for an object start after this many candidates (replies are short).
MAX_SCAN_STARTS = 200


class JSONReplyError(ValueError):
    """The reply holds no JSON object."""


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a reply, looking inside code fences first, then anywhere."""
    cleaned = THINKING.sub("", text).strip()
    for candidate in (*FENCE.findall(cleaned), cleaned):
        found = _first_object(candidate.strip())
        if found is not None:
            return found
    shown = " ".join(text.split())[:120]
    raise JSONReplyError(f"no JSON object in the reply: {shown!r}" if shown else "empty reply")


def _first_object(text: str) -> dict[str, Any] | None:
    """Decode the first `{...}` in `text` that parses as a JSON object."""
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return whole
    decoder = json.JSONDecoder()
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
