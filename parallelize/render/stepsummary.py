"""The GitHub step summary: a Markdown page of one run, appended to $GITHUB_STEP_SUMMARY.

A section run shows a table of its chunks (files, status, tokens, cost), its findings and the
merged result; a vote shows its candidates with votes or scores, the winner and why. GitHub
refuses a step summary over 1 MiB (all of a step's writes together), so the page is built within
what the file has left: tables give up rows and the result its tail, and a note says so. Every
text is masked; model text is escaped so that it shows as text, never as Markdown or HTML.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import EXIT_CODES, first_few
from ..masking import for_people, mask
from ..records import RunResult, TaskResult
from ..reports import VoteReport
from .findings import Findings
from .markdown import escape, fence, plural, usd

#: GitHub's limit on one step's summary, in bytes.
SUMMARY_LIMIT = 1024 * 1024
#: Kept free for the notes that say what was cut (and for what masking might add).
NOTE_ROOM = 4 * 1024
#: A step summary with less room than this left is not written at all.
MIN_ROOM = 8 * 1024
#: Share of the room one table may take, so that the result still shows.
TABLE_SHARE = 3
CELL = 160
WINNER_MARK = "★"
CUT_NOTE = (
    "> The summary was cut to stay within GitHub's 1 MiB step-summary limit; the full result "
    "is in the job log or the output file."
)


def cell(text: object, limit: int = CELL) -> str:
    """Text for a table cell: one line, masked, capped, shown literally (no Markdown, no HTML,
    no @mention)."""
    return escape(for_people(str(text), limit))


class Page:
    """Markdown parts taken while they fit in `room` bytes; `cut` says whether any did not."""

    def __init__(self, room: int) -> None:
        self.room = room - NOTE_ROOM
        self.parts: list[str] = []
        self.cut = False

    def take(self, text: str) -> bool:
        size = len(text.encode("utf-8"))
        if size > self.room:
            self.cut = True
            return False
        self.parts.append(text)
        self.room -= size
        return True

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], what: str) -> None:
        """A table, with as many rows as its share of the room holds."""
        share = self.room // TABLE_SHARE
        head = f"| {' | '.join(header)} |\n|{'---|' * len(header)}\n"
        if not self.take(head):
            return
        used = 0
        for shown, row in enumerate(rows):
            line = f"| {' | '.join(row)} |\n"
            if used + len(line.encode("utf-8")) > share or not self.take(line):
                self.cut = True
                self.parts.append(f"\n_… {len(rows) - shown} more {what} not shown here._\n")
                break
            used += len(line.encode("utf-8"))
        self.parts.append("\n")

    def block(self, title: str, text: str, language: str = "") -> None:
        """A heading and a code block of `text`, its tail cut to the room left."""
        self.take(f"### {title}\n\n")
        whole = fence(text, language)
        if self.take(whole):
            return
        data = text.encode("utf-8")
        keep = max(0, self.room - 64 - (len(whole.encode("utf-8")) - len(data)))
        shown = data[:keep].decode("utf-8", errors="ignore")
        self.cut = True
        self.parts.append(fence(shown, language))
        self.parts.append(f"\n_… {len(data) - len(shown.encode()):,} more bytes not shown here._\n")

    def text(self) -> str:
        tail = [f"\n{CUT_NOTE}\n"] if self.cut else []
        return "".join([*self.parts, *tail])


def step_summary(result: RunResult, findings: Findings, room: int) -> str:
    """The Markdown page of a finished run, within `room` bytes."""
    page = Page(room)
    page.take(f"## {cell(f'parallelize {result.command} · {result.recipe}')}\n\n")
    page.take(headline(result) + "\n\n")
    if result.command == "vote" and isinstance(result.vote, VoteReport):
        vote_part(page, result, result.vote)
    else:
        section_part(page, result, findings)
    return page.text()


def headline(result: RunResult) -> str:
    """**exit 0: success** · model · units · tokens · cost · time."""
    usage = result.usage
    code = result.exit_code
    parts = [
        f"**exit {code}: {cell(EXIT_CODES.get(code, 'unknown'))}**",
        f"model {cell(result.model)}",
        units(result),
        f"tokens in {usage.prompt_tokens:,} / out {usage.completion_tokens:,}" + cache_note(result),
    ]
    cost = result.engine.cost.usd if result.engine else None
    if cost is not None:
        parts.append(f"cost {usd(cost)}")
    parts.append(f"{result.wall_time:.1f} s")
    return " · ".join(parts)


def cache_note(result: RunResult) -> str:
    """` (all cached)` or ` (3 calls cached)`: the tokens counted are those of the calls made,
    while the rows show what each cached answer once took."""
    calls = result.all_calls
    hits = sum(1 for r in calls if r.completion and r.completion.cached)
    if not hits:
        return ""
    return " (all cached)" if hits == len(calls) else f" ({plural(hits, 'call')} cached)"


def units(result: RunResult) -> str:
    """`3 candidates`, `4 chunks`, or `4 chunks (12 calls)` when aspects or clones multiply them."""
    count = len(result.results)
    if result.command == "vote":
        return plural(count, "candidate")
    chunks = len({s.chunk_id for r in result.results if (s := r.task.section) is not None})
    text = plural(chunks or count, "chunk")
    return text + (f" ({plural(count, 'call')})" if chunks and chunks != count else "")


def section_part(page: Page, result: RunResult, findings: Findings) -> None:
    """The chunks table, warnings, findings and the merged result."""
    costs = result.engine.task_costs if result.engine else {}
    rows = [chunk_row(r, costs.get(r.task.index)) for r in result.results]
    if result.aggregate_calls:
        rows.append(merge_row(result.aggregate_calls))
    header = ("#", "chunk", "files", "status", "tokens in / out", "cost")
    page.table(header, rows, "chunks")
    warnings_part(page, result.warnings)
    if findings.items:
        page.take(f"### Findings ({len(findings.items)})\n\n")
        found = [
            (cell(f.severity or "-"), cell(f"{f.path}:{f.line}"), cell(f.text, 400))
            for f in findings.by_severity()
        ]
        page.table(("severity", "where", "finding"), found, "findings")
    if result.output:
        page.block("Result", mask(result.output), "json" if _is_json(result.output) else "")


def chunk_row(r: TaskResult, cost: float | None) -> list[str]:
    completion = r.completion
    cached = bool(completion and completion.cached)
    usage = completion.usage if cached and completion else r.usage
    status = r.status + (" (cached)" if cached else "")
    if r.error:
        status += f": {r.error}"
    return [
        str(r.task.index + 1),
        cell(r.task.label),
        cell(first_few(list(r.task.paths))) if r.task.paths else "",
        cell(status),
        f"{usage.prompt_tokens:,} / {usage.completion_tokens:,}" if completion else "-",
        # A call that failed or never started has no cost to show, not $0.0000.
        "cached" if cached else (usd(cost) if cost is not None and completion else "-"),
    ]


def merge_row(calls: Sequence[TaskResult]) -> list[str]:
    prompt = sum(r.usage.prompt_tokens for r in calls)
    out = sum(r.usage.completion_tokens for r in calls)
    failed = sum(1 for r in calls if not r.succeeded)
    status = f"{failed} failed" if failed else "ok"
    return ["", cell(f"merge ({len(calls)} calls)"), "", status, f"{prompt:,} / {out:,}", ""]


def warnings_part(page: Page, warnings: Sequence[str]) -> None:
    if warnings:
        page.take("**Warnings**\n\n" + "".join(f"- {cell(w, 400)}\n" for w in warnings) + "\n")


def vote_part(page: Page, result: RunResult, vote: VoteReport) -> None:
    """The candidates with their votes or scores, the winner marked, and why."""
    rubric = vote.strategy == "rubric"
    answers = vote.strategy in ("consensus", "weighted")
    header = ["", "#", "model", "status", "score" if rubric else "votes"]
    header += ["answer"] if answers else []
    rows = []
    for c in vote.candidates:
        if rubric:
            mark = f"{c['score']:.2f}" if c.get("score") is not None else ""
        else:
            mark = f"{c['votes']:g}" if c.get("eligible") and c.get("votes") is not None else ""
        status = "out" if c.get("excluded") and c.get("status") == "ok" else c.get("status", "")
        row = [WINNER_MARK if c.get("winner") else "", str(c["index"] + 1), cell(c["model"])]
        row += [cell(status), mark] + ([cell(c.get("answer") or "", 60)] if answers else [])
        rows.append([*row, cell(c.get("text") or "", 120)])
    page.table([*header, "preview"], rows, "candidates")
    verdict = f"Winner #{vote.winner + 1}" if vote.winner is not None else "No winner"
    page.take(f"**{verdict}** ({cell(vote.strategy)}): {cell(vote.reason, 600)}\n\n")
    if vote.error:
        page.take(f"**Error:** {cell(vote.error, 600)}\n\n")
    warnings_part(page, result.warnings)
    if vote.winner is not None and result.output:
        model = vote.candidates[vote.winner]["model"]
        page.block(f"Winner: #{vote.winner + 1} ({cell(model)})", mask(result.output))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def write_step_summary(path: Path, build: Callable[[int], str]) -> str | None:
    """Append the page `build(room)` makes within what the step's summary has left; a problem
    (no room, a file that cannot be written) comes back as a message, never raised."""
    try:
        used = path.stat().st_size if path.exists() else 0
        room = SUMMARY_LIMIT - used
        if room < MIN_ROOM:
            return f"step summary not written: {path} already holds {used:,} bytes of 1 MiB"
        text = mask(build(room))
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text if not used else "\n" + text)
    except OSError as exc:
        return f"step summary not written: {path}: {exc.strerror or exc}"
    return None
