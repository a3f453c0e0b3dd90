"""The only module that prints: progress, plans, summaries, JSON envelopes and output files.

stdout carries only the artifact; everything meant for people goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EXIT_OK, InputError
from .merge.files import write_atomic
from .records import Event, RunResult, TaskResult

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

SCHEMA_VERSION = 1
PREVIEW_CHARS = 2_000
#: Most characters of each candidate shown in the vote table.
CANDIDATE_PREVIEW = 72
WINNER_MARK = "★"
MIN_PREVIEW = 16
MODEL_WIDTH = 28
ANSWER_WIDTH = 24


_say_lock = threading.Lock()


def say(line: str) -> None:
    """One plain line for people on stderr (whole lines only, whichever thread writes)."""
    with _say_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (or FORCE_TERMINAL says to treat it as one, as Rich does)."""
    return bool(os.environ.get("FORCE_TERMINAL")) or sys.stderr.isatty()


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
    if not stderr_is_terminal():

        def log(event: Event) -> None:
            if event.kind in ("queued", "start"):
                return
            line = f"[{event.kind}] {event.task.label}"
            if event.result is not None and event.result.completion is not None:
                line += " (cached)" if event.result.completion.cached else ""
            if event.result is not None and event.result.status == "truncated":
                line += " (truncated)"
            if event.message or (event.result and event.result.error):
                line += f": {event.message or event.result.error}"  # type: ignore[union-attr]
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
                    error = event.result.error if event.result else ""
                    console.print(Text.assemble(("failed", "red"), f" {event.task.label}: {error}"))
            elif event.kind == "retry":
                progress.update(bar, note=f"retrying {event.task.label}")

        yield update


def print_notice(message: str, *, quiet: bool = False) -> None:
    """One line for people on stderr."""
    if not quiet:
        say(message)


def print_warnings(result: RunResult, *, quiet: bool = False) -> None:
    for warning in result.warnings:
        print_notice(f"warning: {warning}", quiet=quiet)


def print_summary(result: RunResult, *, quiet: bool = False) -> None:
    """The end-of-run summary on stderr: calls, tokens, time, failures."""
    if quiet:
        return
    usage = result.usage
    calls = result.all_calls
    cached = sum(1 for r in calls if r.completion and r.completion.cached)
    made = sum(1 for r in calls if r.attempts or (r.completion and r.completion.cached))
    parts = [
        f"{len(result.results)} {UNITS.get(result.command, 'tasks')}",
        f"{made} calls" + (f" ({cached} cached)" if cached else ""),
        f"tokens in {usage.prompt_tokens:,} / out {usage.completion_tokens:,}",
        *engine_parts(result),
        f"{result.wall_time:.1f}s",
    ]
    reduce = result.details.get("merge") or {}
    if reduce.get("depth"):
        parts.append(f"reduce depth {reduce['depth']} ({reduce['calls']} reduce calls)")
    if result.failed:
        parts.append(f"{len(result.failed)} failed")
    if result.truncated:
        parts.append(f"{len(result.truncated)} truncated")
    say("summary: " + ", ".join(parts))
    for failed in result.failed:
        say(f"  failed: {failed.task.label}: {failed.error}")
    for cut in result.truncated:
        reason = cut.completion.finish_reason if cut.completion else None
        say(f"  truncated: {cut.task.label} ({reason or 'empty reply'})")


UNITS = {"section": "chunks", "vote": "candidates"}


def usd(amount: float) -> str:
    """Dollars with the precision small amounts need."""
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def engine_parts(result: RunResult) -> list[str]:
    """Cost, cache savings and throttling for the summary line (nothing when unknown)."""
    cost = result.details.get("cost") or {}
    parts = []
    if cost.get("usd") is not None:
        saved = cost.get("saved_usd")
        parts.append(f"cost {usd(cost['usd'])}" + (f" (saved {usd(saved)})" if saved else ""))
    engine = result.details.get("engine") or {}
    if engine.get("throttled"):
        paced = engine.get("paced_rpm")
        still = f", still pacing at {paced:g} rpm" if paced else ""
        parts.append(f"{engine['throttled']} rate-limited (429){still}")
    return parts


def plan_text(result: RunResult) -> str:
    """A dry run's plan: chunks, files, token counts, redactions and the first rendered prompt."""
    if result.command == "vote":
        return vote_plan_text(result)
    lines = [
        f"plan: {len(result.tasks)} {result.command} task(s), recipe {result.recipe}, "
        f"model {result.model or '(endpoint default)'}, tokens counted with "
        f"{result.details.get('counter', '?')}"
    ]
    inputs = result.details.get("inputs")
    if inputs:
        window = result.details.get("context_window")
        source = result.details.get("context_window_source")
        lines.append(f"inputs: {inputs['summary']}")
        if window:
            lines.append(f"context window: {window:,} tokens (from {source})")
    planned = result.details.get("estimate")
    if planned:
        cost = "no price known" if planned["cost"] is None else f"about {usd(planned['cost'])}"
        lines.append(
            f"estimate: {planned['input_tokens']:,} tokens in, up to "
            f"{planned['output_tokens']:,} out (at max_tokens): {cost}"
        )
    for task in result.tasks:
        paths = task.paths
        shown = ", ".join(paths[:5]) + (f" (+{len(paths) - 5} more)" if len(paths) > 5 else "")
        section = task.section
        size = f"{section.tokens:,} tokens" if section else ""
        target = f" -> {section.out_path}" if section and section.out_path is not None else ""
        lines.append(f"  {task.label}: {size} {shown}".rstrip() + target)
    if inputs and inputs["secrets"]:
        lines.append("secrets redacted before sending (values masked):")
        lines.extend(f"  {_masked(found)}" for found in inputs["secrets"])
    if result.tasks:
        first = result.tasks[0].request
        lines.append("")
        lines.append(f"--- rendered prompt of {result.tasks[0].label} ---")
        for message in first.messages:
            lines.append(f"[{message['role']}]")
            lines.append(str(message["content"]))
    return "\n".join(lines) + "\n"


def vote_plan_text(result: RunResult) -> str:
    """A vote's dry run: the candidate requests, then the judge or scorer calls that follow."""
    details = result.details
    planned = details.get("planned_calls", [])
    lines = [
        f"plan: vote with {len(result.tasks)} candidate(s), strategy {details.get('strategy')}, "
        f"recipe {result.recipe}, seed {details.get('seed')}"
    ]
    for call in planned:
        lines.append(f"  {call['count']} x {call['kind']} on {call['model']}")
    retries = sum(c["count"] for c in planned if "retry" in c["kind"])
    total = sum(c["count"] for c in planned)
    lines.append(
        f"  at most {total} calls" + (f" ({total - retries} without retries)" if retries else "")
    )
    for task in result.tasks:
        params = ", ".join(f"{k}={v}" for k, v in task.request.params.items())
        lines.append(f"  {task.label}: {task.request.model} sample {task.request.sample} {params}")
    if result.tasks:
        lines += ["", "--- rendered prompt of every candidate ---"]
        for message in result.tasks[0].request.messages:
            lines += [f"[{message['role']}]", str(message["content"])]
    return "\n".join(lines) + "\n"


def print_vote_report(result: RunResult, *, quiet: bool = False) -> None:
    """The candidates table and the one-line reason on stderr; the error line even when quiet."""
    details = result.details
    error = details.get("error")
    if quiet:
        pass
    elif details.get("strategy") == "none":
        say(details.get("reason", ""))
    else:
        console = stderr_console()
        console.print(vote_table(details, width=console.width))
        for c in details.get("candidates", []):
            if c["excluded"] and c["status"] != "failed":  # failures are in the summary
                say(f"  #{c['index'] + 1} out: {c['excluded']}")
        winner = details.get("winner")
        if winner is not None:
            model = details["candidates"][winner]["model"]
            say(f"winner: #{winner + 1} ({model}) - {details['reason']}")
        elif details.get("reason") and details.get("reason") != error:
            say(f"no winner: {details['reason']}")
    if error:
        say(f"error: {error}")


def vote_table(details: dict[str, Any], *, width: int = 100) -> Table:
    """One row per candidate: model, status, votes or score, a preview; the winner marked."""
    strategy = details.get("strategy")
    candidates = details.get("candidates", [])
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
            _clip(c["model"], MODEL_WIDTH),
            "out" if c["excluded"] and c["status"] == "ok" else c["status"],
            *([_clip(c["answer"] or "", ANSWER_WIDTH)] if answers else []),
            mark,
        ]
        rows.append(row)
    # The preview takes whatever width the other columns leave (at least a few words).
    used = max((sum(len(cell) + 2 for cell in row) for row in rows), default=0) + 12
    room = max(MIN_PREVIEW, min(CANDIDATE_PREVIEW, width - used))
    for row, c in zip(rows, candidates, strict=True):
        # Text cells: model output is data, never Rich markup ("[/etc/hosts]" must not crash).
        table.add_row(*(Text(cell) for cell in row), Text(_clip(c["text"], room)))
    return table


def _clip(text: str, limit: int) -> str:
    """One line of at most `limit` characters, with an ellipsis when cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: max(0, limit - 1)] + "…"


def print_inputs(result: RunResult, *, quiet: bool = False, verbose: bool = False) -> None:
    """What was read and skipped, on one line; with verbose, every skipped path and redaction."""
    inputs = result.details.get("inputs")
    if quiet or not inputs:
        return
    if not result.dry_run:  # a dry run's plan on stdout has this line already
        say(f"inputs: {inputs['summary']}")
    if not verbose:
        return
    for reason, paths in sorted(inputs["skipped"].items()):
        for path in paths:
            say(f"  skipped ({reason}): {path}")
    for path, encoding in inputs["encodings"].items():
        say(f"  decoded as {encoding}: {path}")
    for found in inputs["secrets"]:
        say(f"  secret redacted: {_masked(found)}")


def _masked(found: dict[str, Any]) -> str:
    """`path:line:rule (kind, N chars)` from a finding's record: never the value."""
    where = f"{found['path']}:{found['line']}:{found['rule']}"
    return f"{where} ({found['kind']}, {found['length']} chars)"


def task_record(result: TaskResult) -> dict[str, Any]:
    """One call as JSON: its data, output, usage and status."""
    completion = result.completion
    return {
        "index": result.task.index,
        "label": result.task.label,
        **result.task.record(),
        "model": completion.model if completion else result.task.request.model,
        "status": result.status,
        "output": result.text,
        "finish_reason": completion.finish_reason if completion else None,
        "usage": {
            "prompt_tokens": completion.usage.prompt_tokens if completion else 0,
            "completion_tokens": completion.usage.completion_tokens if completion else 0,
        },
        "cached": bool(completion and completion.cached),
        "attempts": result.attempts,
        "error": result.error,
    }


def envelope(result: RunResult) -> dict[str, Any]:
    """The `--format json` document: everything, under a schema version."""
    usage = result.usage
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command": result.command,
        "recipe": result.recipe,
        "model": result.model,
        "dry_run": result.dry_run,
        "exit_code": result.exit_code,
        "result": result.output,
        "tasks": [task_record(r) for r in result.results],
        "aggregate_calls": [task_record(r) for r in result.aggregate_calls],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "wall_time": round(result.wall_time, 3),
        "failures": len(result.failed),
        "truncated": len(result.truncated),
        "warnings": result.warnings,
        **result.details,
    }
    if result.dry_run:
        doc["plan"] = [
            {"label": t.label, **t.record(), "messages": list(t.request.messages)}
            for t in result.tasks
        ]
    return doc


def emit(result: RunResult, *, fmt: str, output: Path | None) -> None:
    """Write the artifact (or the JSON envelope) to stdout or to `output`, atomically."""
    if fmt == "json":
        text = json.dumps(envelope(result), indent=2, ensure_ascii=False, default=str) + "\n"
    elif result.dry_run:
        text = plan_text(result)
    else:
        text = result.output
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    if result.exit_code != EXIT_OK and not text:
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(output, text)
    except OSError as exc:
        sys.stdout.write(text)  # never lose a finished result: print it instead
        raise InputError(
            f"--output {output}: cannot write ({exc.strerror}); the result went to stdout"
        ) from None
