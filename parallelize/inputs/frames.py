"""What the model sees of a file: a name that is valid text, and lines that cannot forge a frame.

Every file reaches the model framed as `<file path="...">` ... `</file>`, and the files come from
strangers (a pull request in CI). Two rules keep a file inside its frame:

- A body line that starts, after optional spaces or tabs, with any number of backslashes and then
  `<file` or `</file` (any case) gets one more backslash in front of those backslashes
  (mboxrd-style, so `\\</file>` becomes `\\\\</file>`). Lines are what `str.splitlines` calls
  lines (also after a lone CR, U+2028, ...). Removing one backslash from every such line gives
  the text back exactly (`unescape_body`), and no body line can open or close a frame.
- The path attribute is XML-escaped (`&`, `<`, `>`, `"`, control characters).

Names on disk need not be text: undecodable bytes (which Python keeps as surrogates) and control
or bidirectional-override characters are shown as `\\xNN` / `\\uNNNN` (`display_name`); the file
is still read by its real name.
"""

from __future__ import annotations

import re

#: The characters after which `str.splitlines` starts a new line.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
#: Where a line starts: the text's start, or after a line break.
_LINE_START = rf"(?:\A|(?<=[{LINE_BREAKS}]))"
#: A line that looks like a frame tag: spaces, backslashes, then `<file` or `</file`.
_FRAME_LINE = re.compile(_LINE_START + r"([ \t]*)(\\*</?file)", re.IGNORECASE)
_ESCAPED_LINE = re.compile(_LINE_START + r"([ \t]*)\\(\\*</?file)", re.IGNORECASE)
#: The same test at the start of a text (a piece of a file that starts mid-line).
_FIRST_LINE = re.compile(r"([ \t]*)(\\*</?file)", re.IGNORECASE)
#: What every frame-like line contains. Searching for it alone is about 100x faster than the
#: line-start test at every position (1.3 s of CPU over the 37 MB standard library), and few
#: texts contain it (8 files there), so only those are escaped line by line.
_TAG = re.compile(r"</?file", re.IGNORECASE)

_ATTR_ESCAPES = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord('"'): "&quot;"}
_ATTR_ESCAPES.update({c: f"&#{c};" for c in [*range(0x20), 0x7F]})

#: Characters a displayed name never holds: controls, line separators, bidirectional overrides.
_UNSHOWN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def escape_body(text: str) -> str:
    """The text with one more backslash before `<file`/`</file` at the start of any line."""
    if _TAG.search(text) is None:
        return text
    return _FRAME_LINE.sub(r"\1\\\2", text)


def needs_lead(source: str, start: int) -> bool:
    """Whether a piece of `source` cut at `start`, mid-line, begins with a frame-like line.

    The document's escaping saw no line start there, but in the piece's frame it is one.
    """
    mid_line = start > 0 and source[start - 1] not in LINE_BREAKS
    return mid_line and _FIRST_LINE.match(source, start) is not None


def escape_lead(text: str) -> str:
    """The text with its first line escaped as `escape_body` escapes every line."""
    found = _FIRST_LINE.match(text)
    return text if found is None else f"{found[1]}\\{text[found.end(1) :]}"


def unescape_body(text: str) -> str:
    """The inverse of `escape_body`: one backslash fewer on every escaped line."""
    if _TAG.search(text) is None:
        return text
    return _ESCAPED_LINE.sub(r"\1\2", text)


def escape_attr(value: str) -> str:
    """An attribute value safe inside double quotes (XML escaping)."""
    return value.translate(_ATTR_ESCAPES)


def display_name(path: str) -> str:
    """A path as valid, one-line text: undecodable bytes and control characters escaped."""
    if path.isprintable():  # the common case; surrogates and controls are not printable
        return path
    return _UNSHOWN.sub(_shown_char, path)


def _shown_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
