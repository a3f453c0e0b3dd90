"""Pick ONE best candidate out of N attempts: VOTERS maps a strategy name to a function.

judge      one LLM call (or K rounds) compares all candidates under shuffled neutral labels
rubric     deterministic checks, then LLM scores per weighted criterion; highest total wins
consensus  the normalised answer (or lexical cluster) most candidates agree on, with a quorum
weighted   consensus where each candidate's vote counts its model's weight
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import EXIT_NO_WINNER
from ..masking import for_people
from ..recipe.vote import Vote
from .ballot import Candidate, Decision, VoteContext, in_race
from .similarity import clusters, mean_similarity, medoid, normalise, similarity_matrix

#: Default quorum: strictly more than this share of the N requested candidates.
MAJORITY = 0.5
#: Shares are compared with this tolerance so that 2/3 >= 0.6667 behaves as people expect.
EPSILON = 1e-9
#: Most characters of an answer quoted in a vote's reason.
ANSWER_CHARS = 60


def extract_answer(text: str, pattern: re.Pattern[str] | None) -> str | None:
    """The final answer in a candidate: the `answer` group, else group 1, of the LAST match."""
    if pattern is None:
        return text.strip()
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    if "answer" in pattern.groupindex:
        found = last.group("answer")
    elif pattern.groups:
        found = last.group(1)
    else:
        found = last.group(0)
    return (found if found is not None else last.group(0)).strip()


@dataclass
class _Group:
    """Candidates that agree (one normalised answer, or one lexical cluster)."""

    members: list[Candidate]
    votes: float

    @property
    def first(self) -> int:
        return min(c.index for c in self.members)


def vote_consensus(pool: list[Candidate], ctx: VoteContext) -> Decision:
    """The answer most candidates agree on, if it reaches the quorum."""
    return _tally(pool, ctx, weighted=False)


def vote_weighted(pool: list[Candidate], ctx: VoteContext) -> Decision:
    """Consensus where each candidate's vote counts its model's weight."""
    return _tally(pool, ctx, weighted=True)


def reaches_quorum(share: float, quorum: float | None) -> bool:
    """Whether a winner's share is enough: at least the quorum, or more than half without one."""
    return share >= quorum - EPSILON if quorum is not None else share > MAJORITY


def ties(a: float, b: float) -> bool:
    """Two vote counts that are the same up to float noise (a tie at the top)."""
    return math.isclose(a, b, abs_tol=EPSILON)


def _tally(pool: list[Candidate], ctx: VoteContext, *, weighted: bool) -> Decision:
    vote = ctx.vote
    pattern = re.compile(vote.answer_pattern) if vote.answer_pattern else None
    weight: Callable[[Candidate], float] = (lambda c: c.weight) if weighted else (lambda c: 1.0)
    # share = votes / N requested: failures, and samples an early stop did not draw, included
    # (summed in sample order, as the full run sums them, so both compare the same floats).
    undrawn = ctx.undrawn if weighted else [1.0] * len(ctx.undrawn)
    total = sum([*(weight(c) for c in pool), *undrawn])
    voters = []
    for c in in_race(pool):
        c.answer = extract_answer(c.text, pattern)
        if c.answer is None:
            c.excluded = "no answer matching answer_pattern"
        else:
            voters.append(c)
    name = "weighted vote" if weighted else "consensus"
    if not voters:
        return Decision(
            None,
            f"{name}: no candidate gave an answer",
            EXIT_NO_WINNER,
            error=f"no candidate's reply matched answer_pattern {vote.answer_pattern!r}",
        )
    matrix = similarity_matrix([c.answer or "" for c in voters])
    position = {c.index: i for i, c in enumerate(voters)}
    weights = [weight(c) for c in voters]
    groups = _groups(voters, matrix, vote, weight)
    groups.sort(key=lambda g: (-g.votes, g.first))
    for number, group in enumerate(groups, 1):
        for c in group.members:
            c.votes = group.votes
            c.note = f"group {number}"
    top = groups[0]
    tied = [g for g in groups if ties(g.votes, top.votes)]
    medoid_of_all = False
    if len(tied) > 1 and all(len(g.members) == 1 for g in tied) and vote.match_mode == "similar":
        # Free text where no two candidates agree: the medoid is the most typical one.
        best = medoid([position[g.members[0].index] for g in tied], matrix, weights=weights)
        top, tied, medoid_of_all = next(g for g in groups if g.members[0] is voters[best]), [], True
    pick = _representative(top, voters, matrix, weights, position, vote)
    agreement = mean_similarity(position[pick.index], matrix, list(range(len(voters))))
    share = top.votes / total if total else 0.0
    details = {
        "match": vote.match_mode,
        "similarity_threshold": vote.similarity if vote.match_mode == "similar" else None,
        "quorum": vote.quorum,
        "agreement": round(agreement, 4),
        "split": [_split_row(g, total, voters, matrix, weights, position, vote) for g in groups],
    }
    needed = f">= {vote.quorum:.0%}" if vote.quorum is not None else f"> {MAJORITY:.0%}"
    counted = f"{_fmt(top.votes)} of {_fmt(total)}" + (" weight" if weighted else "")
    if len(tied) > 1:
        answers = " vs ".join(
            repr(for_people(g.members[0].answer or "", ANSWER_CHARS)) for g in tied
        )
        return Decision(
            None,
            f"{name}: tie at the top ({answers}, {counted} each)",
            EXIT_NO_WINNER,
            share=share,
            error=f"no consensus: tie at the top between {answers}",
            details=details,
        )
    reached = reaches_quorum(share, vote.quorum)
    answer = for_people(pick.answer or "", ANSWER_CHARS)
    summary = f"{answer!r} from {counted} ({share:.0%}, quorum {needed})"
    if medoid_of_all:
        summary += f"; no two candidates agree, so this is the medoid (agreement {agreement:.2f})"
    elif vote.match_mode == "similar":
        summary += f", agreement {agreement:.2f}"
    if not reached:
        return Decision(
            None,
            f"{name}: quorum not reached: best {summary}",
            EXIT_NO_WINNER,
            share=share,
            error=f"no consensus: the best answer has {share:.0%} of the votes, "
            f"the quorum needs {needed}",
            details=details,
        )
    return Decision(pick.index, f"{name}: {summary}", share=share, details=details)


def _groups(
    voters: list[Candidate], matrix: list[list[float]], vote: Vote, weight: Callable
) -> list[_Group]:
    if vote.match_mode == "exact":
        by_answer: dict[str, list[Candidate]] = {}
        for c in voters:
            by_answer.setdefault(normalise(c.answer or ""), []).append(c)
        members = list(by_answer.values())
    else:
        members = [[voters[i] for i in g] for g in clusters(matrix, vote.similarity)]
    return [_Group(m, sum(weight(c) for c in m)) for m in members]


def _representative(
    group: _Group,
    voters: list[Candidate],
    matrix: list[list[float]],
    weights: list[float],
    position: dict[int, int],
    vote: Vote,
) -> Candidate:
    """The earliest member for exact matches; the (weighted) medoid of a lexical cluster."""
    if vote.match_mode == "exact" or len(group.members) == 1:
        return min(group.members, key=lambda c: c.index)
    inside = [position[c.index] for c in group.members]
    return voters[medoid(inside, matrix, weights=weights, among=inside)]


def _split_row(
    group: _Group,
    total: float,
    voters: list[Candidate],
    matrix: list[list[float]],
    weights: list[float],
    position: dict[int, int],
    vote: Vote,
) -> dict:
    pick = _representative(group, voters, matrix, weights, position, vote)
    return {
        "answer": pick.answer,
        "candidates": sorted(c.index for c in group.members),
        "votes": group.votes,
        "share": round(group.votes / total, 4) if total else 0.0,
    }


def _fmt(value: float) -> str:
    return f"{value:g}"
