"""Whether the samples not drawn yet could still change a consensus or weighted vote.

A vote over exact answers is settled when every way the remaining samples could turn out (each
one any answer seen, a new answer, no answer, a failure) gives the same winner and the same
quorum verdict as the full N would, so a vote that stops there reports what the full run would.
Pure functions of the samples drawn and the weights of the rest: tests/test_vote_early_stop.py
checks them against brute force over every completion, with the real vote deciding each one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from .consensus import reaches_quorum, ties


@dataclass(frozen=True)
class Sample:
    """What one drawn sample brings to the count: its weight and the answer it votes for."""

    weight: float
    #: The normalised answer; None when the reply has no answer (or the call failed).
    key: str | None = None
    succeeded: bool = True
    #: Cut by max_tokens or a filter, or empty: out of the vote while a clean candidate exists.
    truncated: bool = False


@dataclass(frozen=True)
class Rule:
    """What the vote requires: the quorum (None: more than half) and successful candidates."""

    quorum: float | None
    min_candidates: int


@dataclass(frozen=True)
class Count:
    """The drawn samples summed up: the weight behind each answer, in the order first seen."""

    votes: dict[str, float] = field(default_factory=dict)
    succeeded: int = 0
    #: Some successful candidate is not truncated, so truncated ones are out for good.
    clean: bool = False

    @classmethod
    def of(cls, drawn: Sequence[Sample]) -> Count:
        """Sum the samples in order, as the vote itself sums them."""
        count = cls()
        for sample in drawn:
            count = count.adding(sample)
        return count

    def adding(self, sample: Sample) -> Count:
        """This count with one more sample."""
        if not sample.succeeded:
            return self
        votes = self.votes
        if sample.key is not None and not sample.truncated:
            votes = {**votes, sample.key: votes.get(sample.key, 0) + sample.weight}
        clean = self.clean or not sample.truncated
        return replace(self, votes=votes, succeeded=self.succeeded + 1, clean=clean)


def settled(drawn: Sequence[Sample], remaining: Sequence[float], rule: Rule) -> bool:
    """True when no outcome of the `remaining` samples (their weights) can change the result."""
    total = sum([*(s.weight for s in drawn), *remaining])
    return _settled(Count.of(drawn), remaining, rule, total)


def _settled(count: Count, remaining: Sequence[float], rule: Rule, total: float) -> bool:
    if not remaining:
        return True
    if count.succeeded < rule.min_candidates:  # too few would be exit 1, unless more succeed
        return count.succeeded + len(remaining) < rule.min_candidates
    if not count.clean:  # if every candidate were truncated, the truncated ones would vote
        return False
    rest = sum(remaining)
    return _winner_certain(count, rest, total, rule) or _nobody_can_win(count, rest, total, rule)


def _winner_certain(count: Count, rest: float, total: float, rule: Rule) -> bool:
    """The leader wins even if every remaining sample backs its strongest rival."""
    if not count.votes:
        return False
    ordered = sorted(count.votes.values(), reverse=True)
    lead = ordered[0]
    rival = (ordered[1] if len(ordered) > 1 else 0) + rest  # a new answer could take it all
    return lead > rival and not ties(lead, rival) and reaches_quorum(lead / total, rule.quorum)


def _nobody_can_win(count: Count, rest: float, total: float, rule: Rule) -> bool:
    """No answer, seen or new, wins even if every remaining sample backs it."""
    values = list(count.votes.values())
    ordered = sorted(values, reverse=True)
    for value in values:
        others = list(ordered)
        others.remove(value)
        if _can_win(value + rest, others[0] if others else None, total, rule):
            return False
    return not _can_win(rest, ordered[0] if ordered else None, total, rule)


def _can_win(best: float, rival: float | None, total: float, rule: Rule) -> bool:
    alone = rival is None or (best > rival and not ties(best, rival))
    return alone and reaches_quorum(best / total if total else 0.0, rule.quorum)


def next_wave(drawn: Sequence[Sample], remaining: Sequence[float], rule: Rule, *, cap: int) -> int:
    """How many samples to draw next: the fewest that could settle the vote, at most `cap`.

    A wave only as large as the best case needs (every new sample backing one answer, or none)
    never pays for a sample the result could do without, whatever the replies turn out to be.
    """
    most = max(1, min(cap, len(remaining)))
    count = Count.of(drawn)
    total = sum([*(s.weight for s in drawn), *remaining])
    for size in range(1, most):
        after = remaining[size:]
        for case in _best_cases(count, remaining[:size]):
            if _settled(case, after, rule, total):
                return size
    return most


def _best_cases(count: Count, wave: Sequence[float]) -> Iterator[Count]:
    """The count after the wave if every sample in it backs one answer, abstains, or fails."""
    for key in [*count.votes, None, "\0new"]:
        case = count
        for weight in wave:
            case = case.adding(Sample(weight, key))
        yield case
    yield count  # every one fails
