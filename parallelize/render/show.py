"""A finished command's result, shown: warnings, the artifact, the inputs line, the vote table and
the summary, each where it belongs (the artifact on stdout or in `--output`, the rest on stderr).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from ..masking import mask, terminal_safe
from ..records import RunResult
from .document import emit
from .lines import print_guard, print_warnings, say
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
    refused: ConfigError | None = None
    try:
        emit(result, fmt=fmt, output=output)
    except ConfigError as exc:  # --format sarif refused the finished result: keep it, go on
        refused = ConfigError(f"{exc}; {keep_result(result, output=output)}")
    print_inputs(result, quiet=quiet, verbose=verbose)
    if not result.dry_run:
        if result.command == "vote" and pick is None:
            print_vote_report(result, quiet=quiet)
        print_summary(result, quiet=quiet, verbose=verbose)
    if refused is not None:
        raise refused
    return result


def keep_result(result: RunResult, *, output: Path | None) -> str:
    """A finished result its format refused, kept where it harms nothing: on stdout when
    `--output` named the format's file, else on stderr (stdout was for the format). Says where."""
    text = mask(result.output)
    if not text.strip():
        return "the run has no result to keep"
    if output is not None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return "the result went to stdout"
    say("the result (not written as asked):")
    sys.stderr.write(terminal_safe(text) if text.endswith("\n") else terminal_safe(text) + "\n")
    sys.stderr.flush()
    return "the result is above on stderr"
