"""The people-facing parts on stderr: the progress bar or log, the summary, the inputs line and
the vote table.

Rich is imported only for the progress bar and the vote table on a terminal: plain lines (CI logs,
-q runs, pipes) do without its import time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..masking import for_people, mask, terminal_safe
from ..records import Event, RunResult
from ..reports import InputsReport, VoteReport
from .fold import RepeatedErrors, folds, not_started
from .lines import say, stderr_is_terminal
from .markdown import plural, shows_usd, usd

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


#: Most characters of each candidate shown in the vote table.
CANDIDATE_PREVIEW = 72


WINNER_MARK = "★"


MIN_PREVIEW = 16


MODEL_WIDTH = 28


ANSWER_WIDTH = 24


def stderr_console() -> Console:
    """A console for people: stderr, no colour when NO_COLOR is set (Rich honours it).

    Rich is imported only here, for the progress bar and the vote table: plain lines (CI logs,
    -q runs, pipes) do without its import time.
    """
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def progress_reporter(*, quiet: bool) -> Iterator[Callable[[Event], None]]:
    """A progress callback: a Rich bar on a terminal, one plain line per event otherwise."""
    if quiet:
        yield lambda event: None
        return
    repeated = RepeatedErrors()  # a long server message is printed once, then pointed at
    if not stderr_is_terminal():

        def log(event: Event) -> None:
            if event.kind in ("queued", "start"):
                return
            line = f"[{event.kind}] {event.task.label}"
            if event.result is not None and event.result.completion is not None:
                line += " (cached)" if event.result.completion.cached else ""
            if event.result is not None and event.result.status == "truncated":
                line += " (truncated)"
            message = event.message or (event.result.error if event.result else None)
            if message and event.kind == "failed":  # only errors fold into "(same error as ...)"
                line += f": {repeated.shown(event.task.label, message)}"
            elif message:
                line += f": {message}"
            say(line)

        yield log
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    console = stderr_console()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("calls", total=0, note="")

        def update(event: Event) -> None:
            if event.kind == "queued":
                progress.update(bar, total=(progress.tasks[0].total or 0) + 1)
            elif event.kind in ("done", "failed"):
                progress.advance(bar)
                if event.kind == "failed":
                    error = repeated.shown(
                        event.task.label, (event.result.error if event.result else "") or ""
                    )
                    line = terminal_safe(mask(f" {event.task.label}: {error}"))
                    console.print(Text.assemble(("failed", "red"), line))
            elif event.kind == "retry":
                progress.update(bar, note=f"retrying {event.task.label}")
            elif event.kind == "tools":
                progress.update(bar, note=f"tools: {event.message}")

        yield update


def print_summary(result: RunResult, *, quiet: bool = False, verbose: bool = False) -> None:
    """The end-of-run summary on stderr: calls, tokens, time; then the failed, not started and
    truncated tasks, each kind folded into one line per shared error (every name if verbose)."""
    if quiet:
        return
    usage = result.usage
    calls = result.all_calls
    cached = sum(1 for r in calls if r.completion and r.completion.cached)
    made = sum(1 for r in calls if r.attempts or (r.completion and r.completion.cached))
    parts = [
        _units(result),
        plural(made, "call") + (f" ({cached:,} cached)" if cached else ""),
        f"tokens in {usage.prompt_tokens:,} / out {usage.completion_tokens:,}",
        *engine_parts(result),
        f"{result.wall_time:.1f}s",
    ]
    healed = [s.split for r in result.results if (s := r.task.section) and s.split]
    if healed:  # their parts are calls too: say how many went out
        parts.append(f"{len(healed):,} sent in parts ({plural(sum(healed), 'part call')})")
    reduce = result.merge.get("merge") or {}
    if reduce.get("depth"):
        parts.append(f"reduce depth {reduce['depth']} ({plural(reduce['calls'], 'reduce call')})")
    unstarted = not_started(result.failed)
    if len(result.failed) > unstarted:
        parts.append(f"{len(result.failed) - unstarted:,} failed")
    if unstarted:
        parts.append(f"{unstarted:,} not started")
    if result.truncated:
        parts.append(f"{len(result.truncated):,} truncated")
    say("summary: " + ", ".join(parts))
    for fold in folds(result):
        say(fold.line(verbose=verbose))


UNITS = {"section": "chunk", "vote": "candidate"}


def _units(result: RunResult) -> str:
    """`50 chunks`, or `43 chunks x 3 = 129 sections` when aspects or clones multiply them."""
    count = len(result.results)
    chunks = {s.chunk_id for r in result.results if (s := r.task.section) is not None}
    if result.command == "section" and chunks and len(chunks) < count:
        return f"{plural(len(chunks), 'chunk')} x {count // len(chunks)} = {count:,} sections"
    return plural(count, UNITS.get(result.command, "task"))


def engine_parts(result: RunResult) -> list[str]:
    """Cost, cache savings and throttling for the summary line (nothing when unknown)."""
    engine = result.engine
    if engine is None:
        return []
    parts = []
    cost = engine.cost
    if cost.usd is not None:
        # A saving is mentioned only when it shows as more than $0.0000.
        saved = [f"saved {usd(cost.saved_usd)}"] if shows_usd(cost.saved_usd) else []
        if shows_usd(cost.prompt_cache_saved_usd):
            saved.append(f"prompt cache saved {usd(cost.prompt_cache_saved_usd)}")
        parts.append(f"cost {usd(cost.usd)}" + (f" ({', '.join(saved)})" if saved else ""))
    if engine.throttled:
        paced = engine.paced_rpm
        still = f", still pacing at {paced:g} rpm" if paced else ""
        parts.append(f"{engine.throttled} rate-limited (429){still}")
    return parts


def print_vote_report(result: RunResult, *, quiet: bool = False) -> None:
    """The candidates table and the one-line reason on stderr; the error line even when quiet."""
    vote = result.vote
    if not isinstance(vote, VoteReport):
        return
    error = vote.error
    if quiet:
        pass
    elif vote.strategy == "none":
        say(vote.reason)
    else:
        console = stderr_console()
        console.print(vote_table(vote, width=console.width))
        for c in vote.candidates:
            if c["excluded"] and c["status"] != "failed":  # failures are in the summary
                say(f"  #{c['index'] + 1} out: {c['excluded']}")
        if vote.winner is not None:
            model = vote.candidates[vote.winner]["model"]
            say(f"winner: #{vote.winner + 1} ({model}) - {vote.reason}")
        elif vote.reason and vote.reason != error:
            say(f"no winner: {vote.reason}")
    if error:
        say(f"error: {error}")


def vote_table(vote: VoteReport, *, width: int = 100) -> Table:
    """One row per candidate: model, status, votes or score, a preview; the winner marked."""
    strategy = vote.strategy
    candidates = vote.candidates
    answers = strategy in ("consensus", "weighted")
    header = "score" if strategy == "rubric" else "votes"
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for name in ("", "#", "model", "status", *(["answer"] if answers else []), header):
        table.add_column(name, no_wrap=True, justify="right" if name == header else "left")
    table.add_column("preview", no_wrap=True)
    rows = []
    for c in candidates:
        if strategy == "rubric":
            mark = f"{c['score']:.2f}" if c["score"] is not None else "pass" * c["eligible"]
        else:
            mark = f"{c['votes']:g}" if c["eligible"] else ""
        row = [
            WINNER_MARK if c["winner"] else "",
            str(c["index"] + 1),
            for_people(c["model"], MODEL_WIDTH),
            "out" if c["excluded"] and c["status"] == "ok" else c["status"],
            *([for_people(c["answer"] or "", ANSWER_WIDTH)] if answers else []),
            mark,
        ]
        rows.append(row)
    # The preview takes whatever width the other columns leave (at least a few words).
    used = max((sum(len(cell) + 2 for cell in row) for row in rows), default=0) + 12
    room = max(MIN_PREVIEW, min(CANDIDATE_PREVIEW, width - used))
    for row, c in zip(rows, candidates, strict=True):
        # Text cells: model output is data, never Rich markup ("[/etc/hosts]" must not crash).
        table.add_row(*(Text(cell) for cell in row), Text(for_people(c["text"], room)))
    return table


def print_inputs(result: RunResult, *, quiet: bool = False, verbose: bool = False) -> None:
    """What was read and skipped, on one line; with verbose, every skipped path and redaction."""
    inputs = result.inputs
    if quiet or inputs is None:
        return
    if not result.dry_run:  # a dry run's plan on stdout has these lines already
        say(f"inputs: {inputs.summary}")
        say(f"sizing: {sizing(inputs)}")
    if not verbose:
        return
    for reason, paths in sorted(inputs.skipped.items()):
        for path in paths:
            say(f"  skipped ({reason}): {path}")
    for path, encoding in inputs.encodings.items():
        say(f"  decoded as {encoding}: {path}")
    for found in inputs.secrets:
        say(f"  secret redacted: {masked(found)}")


def sizing(inputs: InputsReport) -> str:
    """Which window, counter and margin the plan used, and which endpoint said so."""
    margin = f"margin {inputs.margin:.0%} of the window" if inputs.margin > 0 else "no margin"
    text = (
        f"context window {inputs.context_window:,} tokens (from {inputs.context_window_source}), "
        f"counted with {inputs.counter}, {margin}"
    )
    return f"{text}; {inputs.facts}" if inputs.facts else text


def masked(found: Mapping[str, Any]) -> str:
    """`path:line:rule (kind, N chars)` from a finding's record: never the value."""
    where = f"{found['path']}:{found['line']}:{found['rule']}"
    return f"{where} ({found['kind']}, {found['length']} chars)"
