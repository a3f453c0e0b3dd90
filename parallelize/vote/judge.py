"""The `judge` strategy: an LLM compares all candidates under neutral labels in a shuffled order.

Order is a known bias of LLM judges (they favour the first or last answer), so every round sees
a different, recorded permutation derived from the vote's seed: round k is a seeded shuffle
rotated by k. With K <= N rounds all orders differ, and with K = N every candidate takes every
position once. The majority of the rounds' verdicts wins; a tie goes to the earliest candidate.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..errors import EXIT_FAILED, EXIT_NO_WINNER
from ..plan.tasks import build_messages
from ..records import ChatRequest, Task, VerdictSource
from .ballot import Candidate, Decision, VoteContext, in_race
from .rubric import ALL_OUT, apply_checks
from .verdict import VerdictError, ask_json

JUDGE_SYSTEM = """\
You are an impartial judge. Several candidate answers to one task follow, under neutral labels \
and in an arbitrary order. Choose the single best answer for the task. Ignore the labels and the \
order, and do not prefer an answer for its length alone. Reply with one JSON object and nothing \
else: {"winner": "<label>", "reason": "<one short sentence>"}"""
#: Words models put around a label ("Candidate B", "[B]", "B."), removed before the lookup.
LABEL_NOISE = re.compile(r"^(?:the\s+)?(?:candidate|answer|option|label)\s*", re.IGNORECASE)
LABEL_PUNCTUATION = "\"'`*[]()<>.:# "
#: Shuffles tried for a not-yet-seen order once every rotation has been used.
MAX_RESHUFFLES = 100


def make_labels(count: int) -> list[str]:
    """Neutral labels A, B, ... Z, AA, AB, ... for `count` candidates."""
    letters = string.ascii_uppercase
    labels = []
    for i in range(count):
        label, i = "", i + 1
        while i:
            i, rest = divmod(i - 1, len(letters))
            label = letters[rest] + label
        labels.append(label)
    return labels


def judge_orders(indices: Sequence[int], rounds: int, seed: int) -> list[list[int]]:
    """The candidate order each round shows: a seeded shuffle, rotated by the round number.

    Past N rounds, further seeded shuffles follow, each new while unseen orders remain.
    """
    size = len(indices)
    rng = random.Random(f"{seed}:0")
    base = list(indices)
    rng.shuffle(base)
    orders = [base[k:] + base[:k] for k in range(min(rounds, size))]
    seen = {tuple(order) for order in orders}
    while len(orders) < rounds:
        order = list(indices)
        for _ in range(MAX_RESHUFFLES):
            rng.shuffle(order)
            if tuple(order) not in seen or len(seen) >= math.factorial(size):
                break
        seen.add(tuple(order))
        orders.append(order)
    return orders


def judge_prompt(task_text: str, shown: Sequence[tuple[str, str]], criteria: Sequence[str]) -> str:
    """The judge's user message: the task, every candidate under its label, what to answer."""
    parts = ["<task>", task_text.strip(), "</task>", ""]
    for label, text in shown:
        parts += [f'<candidate label="{label}">', text.strip(), "</candidate>", ""]
    if criteria:
        parts += ["Judge by these criteria (most important first):"]
        parts += [f"- {c}" for c in criteria] + [""]
    labels = ", ".join(label for label, _ in shown)
    parts.append(
        f'Which candidate is best? Reply with JSON only: {{"winner": "<one of {labels}>", '
        '"reason": "<one short sentence>"}'
    )
    return "\n".join(parts)


def read_verdict(obj: dict[str, Any], labels: Sequence[str]) -> tuple[str, str]:
    """The winning label and reason from a judge's JSON; VerdictError says what is wrong."""
    keys = {str(k).lower(): v for k, v in obj.items()}
    if "winner" not in keys:
        raise VerdictError('the JSON has no "winner" key')
    raw = keys["winner"]
    label = str(raw).strip(LABEL_PUNCTUATION) if isinstance(raw, (str, int)) else ""
    label = LABEL_NOISE.sub("", label).strip(LABEL_PUNCTUATION).upper()
    if label not in labels:
        raise VerdictError(
            f'"winner" is {raw!r}, which is not one of the labels {", ".join(labels)}'
        )
    return label, " ".join(str(keys.get("reason") or "").split())


def vote_judge(pool: list[Candidate], ctx: VoteContext) -> Decision:
    """K judge calls in parallel, each with its own order; the majority of verdicts wins.

    Hard checks among the criteria put candidates out before the judge sees them; the text
    criteria tell the judge what matters.
    """
    apply_checks(pool, ctx.vote.criteria)
    race = in_race(pool)
    if not race:
        return Decision(None, f"judge: {ALL_OUT}", EXIT_NO_WINNER, error=ALL_OUT)
    if len(race) == 1:
        only = race[0]
        return Decision(only.index, f"judge: #{only.number} is the only usable candidate")
    rounds = ctx.vote.judge_rounds
    orders = judge_orders([c.index for c in race], rounds, ctx.seed)
    labels = make_labels(len(race))
    texts = [c for c in ctx.vote.criteria if c.check is None]
    criteria = [c.describe() for c in sorted(texts, key=lambda c: -c.weight)]
    tasks = [_judge_task(k, order, labels, criteria, pool, ctx) for k, order in enumerate(orders)]
    verdicts = ask_json(ctx.executor, tasks, lambda obj: read_verdict(obj, labels))
    calls = [call for verdict in verdicts for call in verdict.calls]
    records = []
    picks: list[tuple[int, str]] = []
    for k, (order, verdict) in enumerate(zip(orders, verdicts, strict=True)):
        record: dict[str, Any] = {
            "round": k,
            "order": order,
            "labels": dict(zip(labels, order, strict=True)),
        }
        if verdict.value is None:
            record["problem"] = verdict.problem
        else:
            label, reason = verdict.value
            picks.append((order[labels.index(label)], reason))
            record |= {"label": label, "winner": picks[-1][0], "reason": reason}
        records.append(record)
    details: dict[str, Any] = {
        "judge_model": ctx.judge_model,
        "permutation": orders[0],
        "rounds": records,
    }
    if not picks:
        problem = verdicts[0].problem
        return Decision(
            None,
            "judge: no usable verdict",
            EXIT_FAILED,
            error=f"the judge's verdict was unusable after a retry: {problem}",
            calls=calls,
            details=details,
        )
    warnings = []
    if len(picks) < rounds:
        warnings.append(f"{rounds - len(picks)} of {rounds} judge rounds gave no usable verdict")
    counts = Counter(index for index, _ in picks)
    for c in race:
        c.votes = counts[c.index]
        c.note = "; ".join(reason for index, reason in picks if index == c.index and reason)
    best = max(counts.values())
    tied = sorted(index for index, n in counts.items() if n == best)
    winner = tied[0]
    reason = next(r for index, r in picks if index == winner)
    said = f": {reason}" if reason else ""
    if rounds == 1:
        text = f"judge ({ctx.judge_model}) chose #{winner + 1}{said}"
    else:
        text = f"judge: {best} of {len(picks)} rounds chose #{winner + 1}{said}"
    if len(tied) > 1:
        details["tie"] = tied
        others = ", ".join(f"#{i + 1}" for i in tied)
        text += f" (tie between {others}, broken by candidate order)"
    return Decision(
        winner, text, share=best / len(picks), calls=calls, warnings=warnings, details=details
    )


def _judge_task(
    k: int,
    order: Sequence[int],
    labels: Sequence[str],
    criteria: Sequence[str],
    pool: Sequence[Candidate],
    ctx: VoteContext,
) -> Task:
    shown = [(label, pool[index].text) for label, index in zip(labels, order, strict=True)]
    user = judge_prompt(ctx.task_text, shown, criteria)
    request = ChatRequest(
        ctx.judge_model, build_messages(JUDGE_SYSTEM, user), dict(ctx.judge_params), sample=k
    )
    label = f"judge round {k + 1}/{ctx.vote.judge_rounds}"
    return Task(k, label, request, VerdictSource("judge", k, tuple(order)))
