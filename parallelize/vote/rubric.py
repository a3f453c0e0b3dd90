"""The `rubric` strategy: deterministic checks first, then LLM scores 1-10 per weighted criterion.

Checks need no model: a candidate failing a hard check is out before any scoring call is made.
A soft check (`hard: false`) counts 10 when it passes and 1 when it fails. Each remaining
candidate is scored by one call that grades it alone (no order bias), all calls in parallel.
The highest weighted average wins; ties go to the earliest candidate and are reported.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from ..errors import EXIT_FAILED, EXIT_NO_WINNER
from ..plan.tasks import build_messages
from ..recipe.vote import Criterion
from ..records import ChatRequest, Task, VerdictSource
from .ballot import Candidate, Decision, VoteContext, in_race
from .verdict import VerdictError, ask_json

SCORER_SYSTEM = """\
You are a strict, fair grader. Score one candidate answer to a task against each numbered \
criterion, from 1 (fails it completely) to 10 (fully meets it). Reply with one JSON object and \
nothing else: {"scores": {"1": <1-10>, "2": <1-10>, ...}, "reason": "<one short sentence>"}"""
MIN_SCORE, MAX_SCORE = 1, 10
ALL_OUT = "every candidate failed the rubric's hard checks"
#: A reply that is exactly one fenced block counts as its content for `valid_json`.
WHOLE_FENCE = re.compile(r"^```[A-Za-z]*\s*\n(.*)\n\s*```$", re.DOTALL)


def check_failure(text: str, criterion: Criterion) -> str | None:
    """Why `text` fails a deterministic check, or None when it passes."""
    body = text.strip()
    size = len(body)
    if criterion.max_chars is not None and size > criterion.max_chars:
        return f"{size} chars > max_chars {criterion.max_chars}"
    if criterion.min_chars is not None and size < criterion.min_chars:
        return f"{size} chars < min_chars {criterion.min_chars}"
    if criterion.regex is not None and not re.search(criterion.regex, text):
        return f"no match for regex {criterion.regex!r}"
    folded = text.casefold()
    missing = [p for p in criterion.must_include or () if p.casefold() not in folded]
    if missing:
        return f"missing {', '.join(map(repr, missing))} (must_include)"
    present = [p for p in criterion.must_not_include or () if p.casefold() in folded]
    if present:
        return f"contains {', '.join(map(repr, present))} (must_not_include)"
    if criterion.valid_json:
        fenced = WHOLE_FENCE.match(body)
        try:
            json.loads(fenced.group(1) if fenced else body)
        except ValueError as exc:
            return f"not valid JSON ({exc.args[0].split(':')[0]})"
    return None


def scorer_prompt(task_text: str, text: str, criteria: Sequence[str]) -> str:
    """The scorer's user message: the task, the one candidate, the numbered criteria."""
    numbered = [f"{i}. {c}" for i, c in enumerate(criteria, 1)]
    keys = ", ".join(f'"{i}": <1-10>' for i in range(1, len(criteria) + 1))
    return "\n".join(
        [
            "<task>",
            task_text.strip(),
            "</task>",
            "",
            "<candidate>",
            text.strip(),
            "</candidate>",
            "",
            "Criteria:",
            *numbered,
            "",
            f'Reply with JSON only: {{"scores": {{{keys}}}, "reason": "<one short sentence>"}}',
        ]
    )


def read_scores(obj: dict[str, Any], count: int) -> tuple[list[float], str]:
    """Scores for `count` criteria from a scorer's JSON, or VerdictError saying what is wrong."""
    keys = {str(k).lower(): v for k, v in obj.items()}
    raw = keys.get("scores")
    if isinstance(raw, list):
        if len(raw) != count:
            raise VerdictError(f'"scores" has {len(raw)} values for {count} criteria')
        values = raw
    elif isinstance(raw, dict):
        given = {str(k).strip(): v for k, v in raw.items()}
        absent = [str(i) for i in range(1, count + 1) if str(i) not in given]
        if absent:
            raise VerdictError(f'"scores" has no score for criterion {", ".join(absent)}')
        values = [given[str(i)] for i in range(1, count + 1)]
    else:
        raise VerdictError('the JSON has no "scores" object')
    scores = [_score(v, i) for i, v in enumerate(values, 1)]
    return scores, " ".join(str(keys.get("reason") or "").split())


def _score(value: Any, number: int) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        score = float(value)
    except (TypeError, ValueError):
        raise VerdictError(f"the score of criterion {number} is not a number: {value!r}") from None
    if not MIN_SCORE <= score <= MAX_SCORE:
        raise VerdictError(f"the score of criterion {number} is {value}, outside 1-10")
    return score


def apply_checks(pool: Sequence[Candidate], criteria: Sequence[Criterion]) -> None:
    """Put out every candidate failing a hard check; record soft checks as 10 or 1."""
    for cand in in_race(list(pool)):
        for criterion in criteria:
            if criterion.check is None:
                continue
            failure = check_failure(cand.text, criterion)
            if criterion.hard and failure:
                cand.excluded = f"failed check: {failure}"
                break
            if not criterion.hard:
                cand.scores[criterion.describe()] = MIN_SCORE if failure else MAX_SCORE


def vote_rubric(pool: list[Candidate], ctx: VoteContext) -> Decision:
    """Hard checks, then one scoring call per surviving candidate; best weighted average wins."""
    criteria = ctx.vote.criteria
    scored = [c for c in criteria if c.check is None]
    soft = [c for c in criteria if c.check is not None and not c.hard]
    apply_checks(pool, criteria)
    details: dict[str, Any] = {
        "criteria": [
            {"criterion": c.describe(), "weight": c.weight, "check": c.check, "hard": c.hard}
            for c in criteria
        ]
    }
    survivors = in_race(pool)
    if not survivors:
        return Decision(None, f"rubric: {ALL_OUT}", EXIT_NO_WINNER, error=ALL_OUT, details=details)
    calls = []
    if scored:
        names = [c.describe() for c in scored]
        tasks = [_scorer_task(cand, names, ctx) for cand in survivors]
        verdicts = ask_json(ctx.executor, tasks, lambda obj: read_scores(obj, len(names)))
        calls = [call for verdict in verdicts for call in verdict.calls]
        for cand, verdict in zip(survivors, verdicts, strict=True):
            if verdict.value is None:
                cand.excluded = f"scores unusable after a retry: {verdict.problem}"
                continue
            values, cand.note = verdict.value
            cand.scores.update(zip(names, values, strict=True))
        if not in_race(pool):
            error = f"no usable scores after a retry: {verdicts[0].problem}"
            return Decision(
                None, f"rubric: {error}", EXIT_FAILED, error=error, calls=calls, details=details
            )
    return _rank(pool, [*scored, *soft], calls, details)


def _rank(
    pool: list[Candidate], counted: Sequence[Criterion], calls: list, details: dict[str, Any]
) -> Decision:
    survivors = in_race(pool)
    total_weight = sum(c.weight for c in counted)
    for cand in survivors:
        if total_weight:
            points = sum(c.weight * cand.scores[c.describe()] for c in counted)
            cand.score = round(points / total_weight, 4)
    warnings = []
    dropped = [c for c in pool if c.excluded and c.excluded.startswith("scores unusable")]
    if dropped:
        warnings.append(f"{len(dropped)} candidate(s) could not be scored and are out")
    best = max((c.score or 0.0) for c in survivors)
    tied = [c for c in survivors if math.isclose(c.score or 0.0, best, abs_tol=1e-9)]
    winner = min(tied, key=lambda c: c.index)
    if not counted:
        text = f"rubric: #{winner.number} is the first candidate passing every check"
    else:
        text = f"rubric: #{winner.number} scored {best:.2f}/10"
        text += f": {winner.note}" if winner.note else ""
    if len(tied) > 1 and counted:
        details["tie"] = [c.index for c in tied]
        names = ", ".join(f"#{c.number}" for c in tied)
        text += f" (tie between {names}, broken by candidate order)"
    return Decision(winner.index, text, calls=calls, warnings=warnings, details=details)


def _scorer_task(cand: Candidate, names: Sequence[str], ctx: VoteContext) -> Task:
    user = scorer_prompt(ctx.task_text, cand.text, names)
    request = ChatRequest(
        ctx.judge_model,
        build_messages(SCORER_SYSTEM, user),
        dict(ctx.judge_params),
        sample=cand.index,
    )
    return Task(cand.index, f"score #{cand.number}", request, VerdictSource("score"))
