"""How likely the current leader is to win the full N vote (`--confidence`, adaptive consistency).

The answers seen so far give a Dirichlet posterior over what the next sample says: one
pseudo-count per answer seen plus one for "something else" (no answer, a failure, a new answer),
added to the samples that said it. A Polya urn draws the remaining samples from it (each draw
updates the urn, which is the same as first drawing the answer shares from the posterior), and the
probability is the fraction of simulated completions in which the leader wins. The generator is
seeded from the vote's seed, so a re-run stops at the same point. Unlike `certainty.settled` this
is an estimate: a vote stopped here may pick differently from the full run, and says so.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .certainty import Count, Rule, Sample
from .consensus import reaches_quorum, ties

#: Pseudo-count of every answer seen and of "something else" (a uniform Dirichlet prior).
PRIOR = 1.0
#: Simulated completions per estimate, and the most urn draws one estimate may make in all.
SIMULATIONS = 1000
MAX_DRAWS = 200_000


def leader_probability(
    drawn: Sequence[Sample], remaining: Sequence[float], rule: Rule, *, seed: int
) -> float:
    """The posterior probability that the leader among `drawn` wins once `remaining` are in.

    0.0 when the drawn samples alone do not elect the leader (no unique leader, a quorum missed
    among them, too few successes, only truncated replies): nothing to be confident about.
    """
    count = Count.of(drawn)
    drawn_total = sum(s.weight for s in drawn)
    leader = _leader(count, drawn_total, rule)
    if leader is None or count.succeeded < rule.min_candidates or not count.clean:
        return 0.0
    if not remaining:
        return 1.0
    keys = list(count.votes)
    said = [0.0] * (len(keys) + 1)  # the last bucket: something else
    for sample in drawn:
        backs = sample.succeeded and not sample.truncated and sample.key is not None
        said[keys.index(sample.key) if backs else -1] += 1
    total = sum([*(s.weight for s in drawn), *remaining])
    start = [n + PRIOR for n in said]
    lead = keys.index(leader)
    rng = random.Random(seed)
    runs = max(100, min(SIMULATIONS, MAX_DRAWS // len(remaining)))
    wins = 0
    for _ in range(runs):
        urn = list(start)
        votes = list(count.votes.values())
        for weight in remaining:
            pick = _draw(urn, rng)
            urn[pick] += 1
            if pick < len(votes):
                votes[pick] += weight
        rival = max((v for i, v in enumerate(votes) if i != lead), default=None)
        mine = votes[lead]
        alone = rival is None or (mine > rival and not ties(mine, rival))
        wins += alone and reaches_quorum(mine / total, rule.quorum)
    return wins / runs


def _leader(count: Count, total: float, rule: Rule) -> str | None:
    """The answer that wins among the drawn samples alone (share of the drawn), if any."""
    if not count.votes:
        return None
    ordered = sorted(count.votes.items(), key=lambda kv: -kv[1])
    key, lead = ordered[0]
    if len(ordered) > 1 and ties(lead, ordered[1][1]):
        return None
    return key if reaches_quorum(lead / total, rule.quorum) else None


def _draw(urn: list[float], rng: random.Random) -> int:
    """One bucket, with probability proportional to its count."""
    point = rng.random() * sum(urn)
    for i, weight in enumerate(urn):
        point -= weight
        if point < 0:
            return i
    return len(urn) - 1
