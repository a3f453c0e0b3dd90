"""Plain lines for people on stderr: notices, warnings, errors. Standard library only, so the
CLI can report a usage error without loading anything else.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

from ..masking import mask, terminal_safe
from .workflow import annotate_error

if TYPE_CHECKING:
    from ..records import RunResult

_say_lock = threading.Lock()


def say(line: str) -> None:
    """One plain line for people on stderr (whole lines only, whichever thread writes), masked
    and with no escape sequence left: parts of it may come from a server."""
    line = terminal_safe(mask(line))
    with _say_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (or FORCE_TERMINAL says to treat it as one, as Rich does)."""
    return bool(os.environ.get("FORCE_TERMINAL")) or sys.stderr.isatty()


def print_notice(message: str, *, quiet: bool = False) -> None:
    """One line for people on stderr."""
    if not quiet:
        say(message)


def print_warnings(result: RunResult, *, quiet: bool = False) -> None:
    for warning in result.warnings:
        print_notice(f"warning: {warning}", quiet=quiet)


def print_error(message: str) -> None:
    """`error: ...` on stderr: the one line a failed command leaves (in GitHub Actions also an
    error annotation)."""
    say(f"error: {message}")
    if (annotation := annotate_error(message)) is not None:
        say(annotation)


def print_guard(result: RunResult) -> None:
    """The guardrail's verdict, when it flagged the answer (which was then withheld)."""
    guard = result.merge.get("guard") or {}
    if guard.get("flagged"):
        held = guard.get("withheld")
        what = f"the answers of {', '.join(held)} were" if held else "the answer was"
        say(f"flagged: {guard['reason']} ({what} withheld)")
