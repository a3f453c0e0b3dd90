"""Draw a vote's samples in waves and stop once the rest cannot change the result (--early-stop).

The first wave is the concurrency; each later one is only as large as could settle the vote
(`certainty.next_wave`), never more than the concurrency nor past N. Samples are drawn in index
order and keep their identity (index, seed, model, cache key), so a later full run takes the drawn
ones from the cache and sends only the rest. Without early stop, all N go out at once as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..engine.executor import Executor
from ..errors import CacheError
from ..records import Task, TaskResult
from .certainty import Rule, Sample, next_wave, settled
from .confidence import leader_probability
from .consensus import extract_answer
from .setup import VoteSetup
from .similarity import normalise

#: Why sampling ended: every sample drawn, the rest could not change the result, or the
#: leader won with the probability --confidence asks for (the full run may differ).
Sampling = Literal["all", "certain", "confident"]


@dataclass(frozen=True)
class Drawing:
    """The samples drawn (a prefix of the N, in index order) and why drawing stopped."""

    results: list[TaskResult]
    sampling: Sampling = "all"
    waves: int = 1
    #: The leader's estimated chance of winning the full vote, when --confidence stopped it.
    probability: float | None = None


def draw_samples(setup: VoteSetup, executor: Executor) -> Drawing:
    """Run the vote's samples: all at once, or in waves until the result is decided."""
    vote = setup.recipe.vote
    tasks = setup.tasks
    if not vote.stops_early or setup.n == 1:
        return Drawing(executor.run(tasks))
    hold_to_budget(executor, tasks)
    weights = sample_weights(setup)
    rule = Rule(vote.quorum, vote.min_candidates)
    pattern = re.compile(vote.answer_pattern) if vote.answer_pattern else None
    results: list[TaskResult] = []
    drawn: list[Sample] = []
    size, waves = min(setup.concurrency, len(tasks)), 0
    while True:
        start = len(results)
        wave = executor.run(tasks[start : start + size])
        waves += 1
        drawn += [
            as_sample(r, w, pattern)
            for r, w in zip(wave, weights[start : start + len(wave)], strict=True)
        ]
        results += wave
        remaining = weights[len(results) :]
        if not remaining:
            return Drawing(results, "all", waves)
        if settled(drawn, remaining, rule):
            return Drawing(results, "certain", waves)
        if vote.confidence is not None:
            seed = setup.seed + len(results)  # reproducible, and new at every wave
            chance = leader_probability(drawn, remaining, rule, seed=seed)
            if chance >= vote.confidence:
                return Drawing(results, "confident", waves, probability=chance)
        if executor.halt is not None:  # a budget or deadline: the rest report as not run
            size = len(remaining)
        else:
            size = next_wave(drawn, remaining, rule, cap=setup.concurrency)


def hold_to_budget(executor: Executor, tasks: Sequence[Task]) -> None:
    """--max-cost refuses the vote before its first wave when all N samples could exceed it, as
    the full vote is refused: the waves may draw all N. Samples the cache holds cost nothing."""
    if executor.ledger.max_cost is None or executor.attempts:
        return
    requests = [t.request for t in tasks]
    if executor.cache is not None and not executor.refresh:
        keys = executor.call_keys(tasks)
        try:
            held = executor.cache.get_many([k for k in keys if k])
        except CacheError:  # the executor says why when it drops the cache
            held = {}
        requests = [t.request for t, key in zip(tasks, keys, strict=True) if key not in held]
    executor.ledger.check(requests)


def sample_weights(setup: VoteSetup) -> list[float]:
    """What each of the N samples' votes weigh (1 each, unless the strategy is weighted)."""
    weighted = setup.recipe.vote.strategy == "weighted"
    return [setup.weight(t.request.model) if weighted else 1.0 for t in setup.tasks]


def as_sample(result: TaskResult, weight: float, pattern: re.Pattern[str] | None) -> Sample:
    """A drawn candidate as the count sees it, answer normalised as the vote compares them."""
    if not result.succeeded:
        return Sample(weight, None, succeeded=False)
    answer = extract_answer(result.text, pattern)
    key = normalise(answer) if answer is not None else None
    return Sample(weight, key, truncated=result.status == "truncated")
