"""Review findings with a place in the code, read from a section run's JSON merge.

A finding is an object with `path` and `line` in any `findings` array of the merged document, at
any depth (`review-aspects` nests one per aspect); its text is `message`, else `problem`. SARIF
(`--format sarif`), the GitHub annotations and the step summary all read them from here, so the
three always agree. Paths are made relative to the repository root with forward slashes: the
root is $GITHUB_WORKSPACE when the run is inside it, else the working directory. A finding whose
path names no input of the run, or lies outside the root, has no place and is only counted.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..records import RunResult

#: The array key that holds findings, wherever it is in the document.
FINDINGS_KEY = "findings"
#: Severity as the recipes spell it -> SARIF level (anything else is a warning).
LEVELS = {"high": "error", "medium": "warning", "low": "note"}
SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}
_LEADING_NUMBER = re.compile(r"\s*(\d+)")


@dataclass(frozen=True)
class Finding:
    """One problem at one place: what the model said, where, and how bad."""

    path: str
    line: int
    severity: str
    text: str
    #: Where in the document its array was (`security` for `security.findings`; "" at the top).
    group: str = ""
    fix: str = ""

    @property
    def level(self) -> str:
        """The SARIF level: error, warning or note."""
        return LEVELS.get(self.severity, "warning")


@dataclass(frozen=True)
class Findings:
    """The findings of one result, and whether the result had a place for them at all."""

    items: tuple[Finding, ...]
    #: How many `findings` arrays the document has (0: not a findings document).
    arrays: int
    #: Entries of those arrays without a path and a line, or whose path is no input of the run
    #: (left out: the merged result still has them).
    unlocated: int = 0

    def by_severity(self) -> list[Finding]:
        """Most severe first, then by place (a stable order for tables and annotations)."""
        return sorted(self.items, key=lambda f: (SEVERITY_ORDER.get(f.severity, 1), f.path, f.line))


NO_FINDINGS = Findings((), 0)


def collect_findings(result: RunResult, *, root: Path | None = None) -> Findings:
    """The findings of a section run whose merged result is a JSON document."""
    if result.command != "section" or result.dry_run or not result.output.strip():
        return NO_FINDINGS
    try:
        document = json.loads(result.output)
    except ValueError:
        return NO_FINDINGS
    known = sorted({path for task in result.tasks for path in task.paths})
    places = Places(known, root=repo_root() if root is None else root)
    items: list[Finding] = []
    arrays = unlocated = 0
    for group, entries in _arrays(document, ()):
        arrays += 1
        for entry in entries:
            finding = _finding(entry, group, places)
            if finding is None:
                unlocated += 1
            else:
                items.append(finding)
    return Findings(tuple(items), arrays, unlocated)


def _arrays(value: Any, where: tuple[str, ...]) -> Iterator[tuple[str, list[Any]]]:
    """Every `findings` array in the document, with the keys that lead to it."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == FINDINGS_KEY and isinstance(item, list):
                yield ".".join(where), item
            else:
                yield from _arrays(item, (*where, str(key)))
    elif isinstance(value, list):
        for item in value:
            yield from _arrays(item, where)


def _finding(entry: Any, group: str, places: Places) -> Finding | None:
    if not isinstance(entry, dict) or "path" not in entry or "line" not in entry:
        return None
    path, line = entry["path"], _line(entry["line"])
    if not isinstance(path, str) or not path.strip() or line is None:
        return None
    text = entry.get("message")
    if not isinstance(text, str) or not text.strip():
        text = entry.get("problem")
    severity = entry.get("severity")
    fix = entry.get("fix")
    where = places.repo_path(path)
    if where is None:
        return None
    return Finding(
        path=where,
        line=line,
        severity=severity.strip().lower() if isinstance(severity, str) else "",
        text=text.strip() if isinstance(text, str) and text.strip() else "(no message)",
        group=group,
        fix=fix.strip() if isinstance(fix, str) else "",
    )


def _line(value: Any) -> int | None:
    """A line number from what the model wrote (12, "12", "12-15"); at least 1."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return max(value, 1)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 1)
    if isinstance(value, str) and (match := _LEADING_NUMBER.match(value)):
        return max(int(match.group(1)), 1)
    return None


def repo_root() -> Path:
    """$GITHUB_WORKSPACE when the working directory is inside it, else the working directory."""
    cwd = Path.cwd()
    workspace = os.environ.get("GITHUB_WORKSPACE")
    if workspace:
        root = Path(workspace).resolve()
        if cwd.resolve() == root or root in cwd.resolve().parents:
            return root
    return cwd


class Places:
    """Turns the paths a model wrote into paths relative to the repository root, or None.

    Only an input of the run has a place: a path that is absolute elsewhere, escapes the root or
    names no input (`/etc/passwd`, `../../x`) is unlocated, so it never becomes a SARIF location
    or an annotation's file (the merged result still shows it)."""

    def __init__(self, known: Sequence[str], *, root: Path) -> None:
        self.cwd = Path.cwd().resolve()
        self.root = root.resolve()
        #: The inputs as absolute paths (no file system access: they were read from there).
        self.known = {os.path.normpath(self.cwd / _clean(path)) for path in known}

    def repo_path(self, path: str) -> str | None:
        """Forward slashes, relative to the root, when it names an input: as written (from the
        working directory or the root), or a bare or shortened name that ends exactly one input
        path (models drop leading folders); None for anything else."""
        cleaned = _clean(path)
        tries = [cleaned] if cleaned.startswith("/") else [self.cwd / cleaned, self.root / cleaned]
        found = next((p for t in tries if (p := os.path.normpath(t)) in self.known), None)
        if found is None and not cleaned.startswith(("/", "../")) and cleaned != "..":
            ends = [k for k in self.known if k.endswith("/" + cleaned)]
            found = ends[0] if len(ends) == 1 else None
        if found is None:
            return None
        try:
            return PurePosixPath(*Path(found).relative_to(self.root).parts).as_posix()
        except ValueError:  # an input outside the repository: code scanning cannot place it
            return None


def _clean(path: str) -> str:
    """`.\\src\\a.py` -> `src/a.py`; `a//b/../c` -> `a/c` (no file system access)."""
    text = path.strip().replace("\\", "/")
    if text.startswith("file://"):
        text = text[len("file://") :]
    absolute = text.startswith("/")
    parts: list[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts and parts[-1] != "..":
            parts.pop()
        else:
            parts.append(part)
    joined = "/".join(parts)
    return "/" + joined if absolute else joined
