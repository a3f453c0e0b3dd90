"""A finished command's result, shown: warnings, the artifact, the inputs line, the vote table and
the summary, each where it belongs (the artifact on stdout or in `--output`, the rest on stderr).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..records import RunResult
from .document import emit
from .lines import print_guard, print_warnings
from .terminal import print_inputs, print_summary, print_vote_report


def show(
    result: RunResult,
    *,
    fmt: str,
    output: Path | None,
    quiet: bool,
    verbose: bool,
    pick: Callable[[RunResult], RunResult] | None = None,
) -> RunResult:
    """Print everything a command's result has to say, in the order people read it; with `pick`
    (`vote --pick`) the candidates table comes first and the artifact is the one picked. The
    result shown is returned."""
    print_warnings(result, quiet=quiet)
    print_guard(result)
    if pick is not None and not result.dry_run:
        print_vote_report(result)
        result = pick(result)
    emit(result, fmt=fmt, output=output)
    print_inputs(result, quiet=quiet, verbose=verbose)
    if not result.dry_run:
        if result.command == "vote" and pick is None:
            print_vote_report(result, quiet=quiet)
        print_summary(result, quiet=quiet, verbose=verbose)
    return result
