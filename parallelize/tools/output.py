"""What a tool's result looks like to the model: bounded, secrets redacted, framed as input.

Tool output is untrusted input: a file or a command's output may hold secrets or text written
to steer the model. It goes through the same secret scanner and the same frame as a file's
content, so a line cannot forge a frame and a key is never sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..inputs.frames import escape_attr, escape_body
from ..inputs.secrets import scan

#: Characters of one tool result a model is sent; the rest is cut with a note.
DEFAULT_OUTPUT_CHARS = 32_000


def bounded(text: str, cap: int = DEFAULT_OUTPUT_CHARS, *, total: int | None = None) -> str:
    """The text cut to `cap` characters, saying how much was left out."""
    size = len(text) if total is None else total
    if len(text) <= cap and size <= len(text):
        return text
    return (
        f"{text[:cap]}\n[output truncated: the first {min(cap, len(text)):,} of {size:,} "
        "characters; ask for less, e.g. a line range or a narrower search]"
    )


def framed(name: str, arguments: Mapping[str, Any] | str, text: str) -> tuple[str, int]:
    """A tool's result as the model sees it, and how many secrets were redacted."""
    shown = arguments if isinstance(arguments, str) else _compact(arguments)
    label = f"tool {name} {shown}"[:300]
    path = arguments.get("path") if isinstance(arguments, Mapping) else None
    # A named file is scanned as that file (its config rules); other output as unknown text.
    safe, findings = scan(path if isinstance(path, str) and path else "<stdin>", text)
    body = escape_body(safe)
    return f'<file path="{escape_attr(label)}">\n{body}\n</file>', len(findings)


def _compact(arguments: Mapping[str, Any]) -> str:
    try:
        return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError):
        return "{...}"
