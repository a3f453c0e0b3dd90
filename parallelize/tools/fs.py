"""The built-in `fs` tools: read_file, list_dir and search over the input root, read-only.

They see only what `RootFiles` allows (the inputs' rules). `search` matches a literal string by
default; a regular expression runs through the `regex` package with a time limit, since a
pattern the model chose could otherwise backtrack for hours. Search looks at each file's text
after its secrets are redacted, so it cannot be used to guess a secret one character at a time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..inputs.read import DEFAULT_MAX_FILE_BYTES, decode_text
from ..inputs.secrets import scan
from .base import ToolOutcome, ToolSpec
from .output import bounded
from .root import Refused, RootFiles

#: Entries list_dir shows at most.
MAX_LIST = 1000
#: Matches search returns at most, and the characters of a matching line it shows.
MAX_MATCHES = 200
LINE_CHARS = 300

_PATH = {"type": "string", "description": "relative to the root, e.g. src/app.py"}
SPECS = (
    ToolSpec(
        "read_file",
        "Read a text file under the root, whole or a range of lines (1-based, inclusive).",
        {
            "type": "object",
            "properties": {
                "path": _PATH,
                "start_line": {"type": "integer", "minimum": 1},
                "end_line": {"type": "integer", "minimum": 1},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "list_dir",
        "List the files and folders in a folder under the root ('.' is the root).",
        {
            "type": "object",
            "properties": {"path": _PATH},
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "search",
        "Find lines containing a string in the files under a folder; regex: true for a regular "
        "expression. Answers path:line: text.",
        {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "minLength": 1},
                "regex": {"type": "boolean"},
                "path": _PATH,
            },
            "required": ["pattern"],
            "additionalProperties": False,
        },
    ),
)


class FsTools:
    """The fs tools over one root (a ToolSource)."""

    def __init__(self, root: RootFiles, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes

    def specs(self) -> Sequence[ToolSpec]:
        return SPECS

    def close(self) -> None:
        return None

    def call(self, name: str, arguments: Mapping[str, Any], *, timeout: float) -> ToolOutcome:
        started = time.monotonic()
        try:
            if name == "read_file":
                text = self._read_file(arguments)
            elif name == "list_dir":
                text = self._list_dir(arguments)
            elif name == "search":
                text = self._search(arguments, deadline=started + timeout)
            else:
                raise Refused(f"no fs tool named {name!r}")
        except Refused as exc:
            return ToolOutcome(False, "", str(exc), time.monotonic() - started)
        size = len(text.encode("utf-8", "surrogatepass"))
        return ToolOutcome(True, bounded(text), None, time.monotonic() - started, size)

    def _text(self, path: str) -> str | None:
        """A file's text, or None when it is binary, undecodable or too large."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(self.max_file_bytes + 1)
        except OSError:
            return None
        if len(data) > self.max_file_bytes:
            return None
        decoded = decode_text(data)
        return decoded[0] if decoded else None

    def _read_file(self, arguments: Mapping[str, Any]) -> str:
        rel, path = self.root.file(arguments.get("path"))
        text = self._text(path)
        if text is None:
            raise Refused(f"{rel!r} is binary, undecodable or larger than {self.max_file_bytes:,}")
        start, end = arguments.get("start_line"), arguments.get("end_line")
        if start is None and end is None:
            return text
        lines = text.splitlines(keepends=True)
        first = int(start or 1)
        last = min(int(end or len(lines)), len(lines))
        if first > len(lines) or last < first:
            raise Refused(f"{rel!r} has {len(lines)} lines; lines {first}-{last} are not in it")
        return f"[lines {first}-{last} of {len(lines)}]\n" + "".join(lines[first - 1 : last])

    def _list_dir(self, arguments: Mapping[str, Any]) -> str:
        rel = self.root.relative(arguments.get("path"))
        if not self.root.is_dir(rel):
            raise Refused(f"{rel!r} is not a folder tools may list")
        prefix = "" if rel == "." else rel + "/"
        entries: set[str] = set()
        for name in self.root.under(rel):
            head, sep, _ = name[len(prefix) :].partition("/")
            entries.add(head + "/" if sep else head)
        shown = sorted(entries)
        more = f"\n[{len(shown) - MAX_LIST:,} more entries]" if len(shown) > MAX_LIST else ""
        return "\n".join(shown[:MAX_LIST]) + more if shown else "(empty)"

    def _search(self, arguments: Mapping[str, Any], *, deadline: float) -> str:
        pattern = arguments.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise Refused("pattern must be a non-empty string")
        rel = self.root.relative(arguments.get("path"))
        if not self.root.is_dir(rel) and rel not in self.root.files():
            raise Refused(f"{rel!r} is not a file or folder tools may search")
        names = self.root.under(rel) if self.root.is_dir(rel) else [rel]
        matcher = _matcher(pattern, bool(arguments.get("regex")), deadline)
        found: list[str] = []
        for name in names:
            if time.monotonic() > deadline:
                raise Refused(f"search timed out after {len(found)} matches; narrow the path")
            text = self._text(self.root.files()[name])
            if text is None:
                continue
            safe, _ = scan(name, text)
            for number, line in enumerate(safe.splitlines(), 1):
                if matcher(line):
                    found.append(f"{name}:{number}: {line[:LINE_CHARS]}")
                    if len(found) >= MAX_MATCHES:
                        return "\n".join(found) + f"\n[stopped at {MAX_MATCHES} matches]"
        return "\n".join(found) if found else "no matches"


def _matcher(pattern: str, is_regex: bool, deadline: float) -> Any:
    """A line test: a substring, or a regular expression bounded by the call's time left."""
    if not is_regex:
        return lambda line: pattern in line
    import regex  # here: only a regex search needs it

    try:
        compiled = regex.compile(pattern)
    except (regex.error, ValueError, OverflowError) as exc:
        raise Refused(f"pattern is not a valid regular expression: {exc}") from None

    def test(line: str) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Refused("the regular expression ran out of time; simplify it")
        try:
            return compiled.search(line, timeout=left) is not None
        except TimeoutError:
            raise Refused("the regular expression ran out of time; simplify it") from None

    return test
