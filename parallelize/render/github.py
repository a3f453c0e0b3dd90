"""GitHub Actions: a finished run's warnings and errors as annotations, and its step summary.

Only when GITHUB_ACTIONS=true (the runner sets it); otherwise nothing here writes anything. The
annotations are workflow commands on stderr (workflow.py escapes them): the run's errors and
failed calls as errors, review findings at their file and line, then the run's warnings. GitHub
shows 10 warnings and 10 errors per step, so a run annotates at most that many of each and folds
the rest into one plain line.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..records import RunResult
from ..reports import VoteReport
from .findings import Finding, Findings, collect_findings
from .fold import folds
from .lines import say
from .sarif import rule_id
from .workflow import TITLE, in_github_actions, workflow_command

#: Annotations of each kind GitHub shows for one step.
MAX_PER_KIND = 10


@dataclass
class Annotations:
    """The workflow commands of one run: at most `limit` of each kind, the rest counted."""

    limit: int = MAX_PER_KIND
    lines: list[str] = field(default_factory=list)
    shown: Counter[str] = field(default_factory=Counter)
    held: Counter[str] = field(default_factory=Counter)

    def add(
        self,
        kind: str,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        title: str | None = TITLE,
    ) -> None:
        if self.shown[kind] >= self.limit:
            self.held[kind] += 1
            return
        self.shown[kind] += 1
        self.lines.append(workflow_command(kind, message, file=file, line=line, title=title))

    def folded(self) -> str | None:
        """One plain line for what GitHub would not show, or None."""
        if not self.held:
            return None
        counts = " and ".join(
            f"{n} more {kind}{'s' if n > 1 else ''}" for kind, n in sorted(self.held.items())
        )
        return (
            f"{TITLE}: {counts} not annotated (GitHub shows {self.limit} of each per step); "
            "all are in this log and the step summary"
        )

    def all_lines(self) -> list[str]:
        """The commands, then the fold line when some were held back."""
        fold = self.folded()
        return [*self.lines, fold] if fold else list(self.lines)


def annotations_for(result: RunResult, findings: Findings) -> Annotations:
    """What a finished run annotates: its errors, its findings at their lines, its warnings."""
    notes = Annotations()
    for error in run_errors(result):
        notes.add("error", error)
    for group in folds(result):  # one per shared error, as the summary folds them
        if group.failed:
            notes.add("error", group.text(), title=f"{TITLE}: {group.head}")
    for finding in findings.by_severity():
        notes.add("warning", finding_message(finding), **finding_place(result, finding))
    for warning in run_warnings(result):
        notes.add("warning", warning)
    return notes


def finding_place(result: RunResult, finding: Finding) -> dict[str, object]:
    """The annotation's file, line and title: `high: code-review`."""
    what = rule_id(result.recipe, finding.group)
    title = f"{finding.severity}: {what}" if finding.severity else what
    return {"file": finding.path, "line": finding.line, "title": title}


def finding_message(finding: Finding) -> str:
    return f"{finding.text}\nFix: {finding.fix}" if finding.fix else finding.text


def run_errors(result: RunResult) -> list[str]:
    """The run's own errors: a vote's error, a guardrail's flag."""
    errors = []
    vote = result.vote
    if isinstance(vote, VoteReport) and vote.error:
        errors.append(vote.error)
    guard = result.merge.get("guard") or {}
    if guard.get("flagged"):
        errors.append(f"flagged: {guard.get('reason') or 'by the guardrail'}")
    return errors


def run_warnings(result: RunResult) -> Iterable[str]:
    """The run's warnings, truncated answers (folded as in the summary), a vote without a
    winner."""
    yield from result.warnings
    yield from (group.text() for group in folds(result) if not group.failed)
    vote = result.vote
    if isinstance(vote, VoteReport) and vote.winner is None and vote.reason != vote.error:
        yield f"no winner: {vote.reason}"


def publish(result: RunResult) -> None:
    """In GitHub Actions: the annotations on stderr and the step summary; else nothing."""
    if not in_github_actions():
        return
    from .stepsummary import step_summary, write_step_summary  # only in a GitHub step

    findings = collect_findings(result)
    for line in annotations_for(result, findings).all_lines():
        say(line)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target and not result.dry_run:  # a plan has no chunks run, candidates or result to show
        problem = write_step_summary(
            Path(target), lambda room: step_summary(result, findings, room)
        )
        if problem:
            say(workflow_command("warning", problem, title=TITLE))
