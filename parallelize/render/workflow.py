"""GitHub Actions workflow commands: `::warning file=src/a.py,line=3,title=T::message` lines.

The runner reads a command from one line of the step's output; text escaped as it documents (in
the message % -> %25, CR -> %0D, LF -> %0A; in a property also : -> %3A and , -> %2C) cannot end
a command early or start another, whatever a model or a server wrote. Every value is masked
before it is escaped and capped, so an API key never reaches an annotation. Standard library and
masking only: the CLI's earliest error path can use it.
"""

from __future__ import annotations

import os

from ..masking import mask, terminal_safe

#: Characters of one annotation's message and title (a model's text can be long).
MESSAGE_LIMIT = 2_000
TITLE_LIMIT = 200
#: Characters of an annotation's file: a longer path (or one masking or neutralising would
#: change) is not cut, which would name a file that does not exist; it moves into the message.
FILE_LIMIT = 1_000
LIMITS = {"file": FILE_LIMIT}
TITLE = "parallelize"


def in_github_actions() -> bool:
    """Whether this process runs as a GitHub Actions step (the runner sets GITHUB_ACTIONS)."""
    return os.environ.get("GITHUB_ACTIONS") == "true"


def escape_data(text: str) -> str:
    """A workflow command's message: %, CR and LF escaped."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: as a message, and : and , too."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(
    kind: str,
    message: str,
    *,
    file: str | None = None,
    line: int | None = None,
    title: str | None = None,
) -> str:
    """One `::kind props::message` line: masked, capped, escaped, no escape sequence left."""
    if file is not None and (len(file) > FILE_LIMIT or _prepared(file, FILE_LIMIT) != file):
        where = f"{file}:{line}" if line is not None else file
        message, file, line = f"{where}: {message}", None, None
    values = {"file": file, "line": str(line) if line is not None else None, "title": title}
    props = ",".join(
        f"{name}={escape_property(_prepared(value, LIMITS.get(name, TITLE_LIMIT)))}"
        for name, value in values.items()
        if value
    )
    head = f"::{kind} {props}" if props else f"::{kind}"
    return f"{head}::{escape_data(_prepared(message, MESSAGE_LIMIT))}"


def _prepared(text: str, limit: int) -> str:
    """Masked whole first (a cut never leaves part of a key), then neutralised and capped."""
    # CR and LF are left for the escaping; other controls and escape sequences are neutralised.
    text = "\r".join(terminal_safe(part) for part in mask(text).split("\r"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def annotate_error(message: str) -> str | None:
    """The error annotation of a command's one error line, in GitHub Actions; else None."""
    return workflow_command("error", message, title=TITLE) if in_github_actions() else None
