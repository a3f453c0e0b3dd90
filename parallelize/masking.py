"""Secrets never leave in anything we write, and a server's words are made safe to show.

Everything a server sends is untrusted: an error body may repeat the request's Authorization
header, a reply may carry escape sequences that drive the terminal, a message may be megabytes.

- `mask(text)`: every secret in use — each API key registered by the run, any Authorization or
  api-key header value, and URL user-info — becomes `[REDACTED:api-key]`. Applied where a
  server's text enters (errors, completions) and again where output leaves (stdout, stderr,
  `-o`, `--out-dir`, manifest, cache), so an output added later is masked by the writer it uses.
- `for_people(text)`: one line for diagnostics: masked, control characters and escape sequences
  neutralised, capped at SERVER_TEXT_LIMIT characters. Results keep the model's bytes (masked).

Standard library only: every layer, and the CLI's earliest error path, can use it.
"""

from __future__ import annotations

import json
import re
import threading

REDACTED = "[REDACTED:api-key]"

#: Characters of one server message shown in diagnostics (stderr, summaries, JSON error fields).
SERVER_TEXT_LIMIT = 500

#: Shorter keys ("x", "ollama" for a local server) are not searched for in text: masking them
#: would rewrite ordinary words of the results. They are still masked after `Authorization:
#: Bearer` (or Basic, Token).
MIN_MASKED_LENGTH = 8

_AUTH_VALUE = re.compile(
    r"""(?ix)
    (?P<name>\b(?:proxy-)?authorization)          # the header, as text or as a JSON/dict key
    (?P<sep>["']?\s*[:=]\s*["']?)
    (?:
      (?P<scheme>bearer|basic|token)\s+(?P<value>[^\s"',;<>&]+)   # any value after a scheme
      | (?P<bare>[^\s"',;<>&]{8,})                              # else a long one
    )
    """
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+(?!\[REDACTED)[A-Za-z0-9._~+/=:-]{8,}")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s@\"'<>]+)@")
#: C0/C1 controls, DEL, and the escape sequences they start (CSI, OSC ... BEL/ST).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: What can hide inside a secret and vanish on a screen: escape sequences, controls other than
#: line breaks and tabs, and invisible format characters (soft hyphen, zero-width, bidi marks).
_HIDERS = re.compile(
    _ESCAPES.pattern
    + r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    r"\u2066-\u2069\ufeff]"
)

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask `value` (and its JSON-escaped form) in everything written from now on."""
    if not value or len(value) < MIN_MASKED_LENGTH:
        return
    forms = {value, json.dumps(value)[1:-1]}
    global _pattern
    with _lock:
        if forms <= _secrets:
            return
        _secrets.update(forms)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def mask(text: str) -> str:
    """`text` with every secret in use replaced by [REDACTED:api-key].

    A secret split by an escape sequence or an invisible character would survive a plain search
    and reappear on a screen; when such characters are present and hide a secret, they are
    removed from the text before masking (only then: results otherwise keep their bytes).
    """
    if not text:
        return text
    masked = _mask_visible(text)
    if _HIDERS.search(masked):
        visible = _HIDERS.sub("", masked)
        remasked = _mask_visible(visible)
        if remasked != visible:
            return remasked
    return masked


def _mask_visible(text: str) -> str:
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if "@" in text:
        text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _AUTH_VALUE.sub(_masked_value, text)
    return _BEARER.sub(rf"\1 {REDACTED}", text)


def _masked_value(match: re.Match[str]) -> str:
    value = match.group("value") or match.group("bare")
    if value.startswith("[REDACTED"):
        return match.group(0)
    scheme = f"{match.group('scheme')} " if match.group("scheme") else ""
    return f"{match.group('name')}{match.group('sep')}{scheme}{REDACTED}"


def terminal_safe(text: str) -> str:
    """Escape sequences removed and control characters other than newline and tab made visible."""
    return _CONTROLS.sub(_visible, _ESCAPES.sub("", text))


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in "\n\t":
        return char
    return f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"


def for_people(text: str, limit: int = SERVER_TEXT_LIMIT) -> str:
    """A server's message as one safe line for diagnostics: masked, neutralised, capped."""
    text = mask(text)[: limit * 4]  # masked whole first: a cut never leaves part of a key
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    line = " ".join(terminal_safe(text).split())
    if len(line) <= limit:
        return line
    return line[: limit - 1] + "…"
