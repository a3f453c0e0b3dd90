"""The parts of `run_vote` that need no connection: check the setup, plan the calls, decide.

run.run_vote opens the engine and runs the candidates; everything before (validation, the model
list, the seed, the tasks) and after (admission, the strategy, the RunResult) lives here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ..engine.executor import Executor
from ..errors import (
    EXIT_FAILED,
    EXIT_OK,
    ContextOverflowError,
    FatalLLMError,
)
from ..records import TRUNCATING_FINISH_REASONS, RunResult, Task
from ..reports import VoteReport
from .ballot import Candidate, Decision, VoteContext
from .consensus import extract_answer, vote_consensus, vote_weighted
from .judge import vote_judge
from .rubric import vote_rubric
from .setup import VoteSetup
from .similarity import mean_similarity, similarity_matrix
from .waves import Drawing


def decide(drawing: Drawing, setup: VoteSetup, executor: Executor) -> RunResult:
    """Admit the usable candidates, run the strategy, and assemble the RunResult."""
    vote = setup.recipe.vote
    results = drawing.results
    pool = [
        Candidate(i, r, r.task.request.model, setup.weight(r.task.request.model))
        for i, r in enumerate(results)
    ]
    if setup.n == 1:
        warnings, _ = admit(pool, min_candidates=1)  # a truncated only answer is reported
        decision = _single(pool[0])
    else:
        warnings, error = admit(pool, min_candidates=vote.min_candidates)
        if error:
            decision = no_winner(error)
        else:
            context = VoteContext(
                vote,
                executor,
                task_text=task_text(setup.tasks[0]),
                judge_model=setup.judge_model,
                judge_params=setup.judge_params(),
                seed=setup.seed,
                undrawn=_undrawn(drawing, setup),
            )
            try:
                decision = VOTERS[vote.strategy](pool, context)
            except FatalLLMError as exc:  # e.g. an unknown judge model: keep the candidates
                decision = no_winner(fatal_message(exc, setup), exit_code=exc.exit_code)
    decision.reason += _stopped_early(drawing, setup)
    winner = pool[decision.winner] if decision.winner is not None else None
    # The winner's text as it came, ending in one newline so a terminal prompt starts afresh.
    output = winner.text.rstrip("\n") + "\n" if winner is not None else ""
    if winner is not None and vote.output == "answer":
        answer = winner.answer or extract_answer(winner.text, re.compile(vote.answer_pattern or ""))
        if answer is None:
            warnings.append(
                f"#{winner.number} has no answer matching answer_pattern; printing it whole"
            )
        else:
            output = answer + "\n"
    return RunResult(
        "vote",
        setup.recipe.name,
        ", ".join(m.name for m in setup.models),
        setup.tasks[: len(results)],
        results,
        output=output,
        aggregate_calls=decision.calls,
        warnings=[*setup.warnings, *warnings, *decision.warnings],
        vote=vote_report(pool, decision, setup, sampling=drawing.sampling),
        exit_code=decision.exit_code,
    )


def _undrawn(drawing: Drawing, setup: VoteSetup) -> list[float]:
    """The model weights of the samples a certain early stop did not draw: they keep their place
    in every share (votes / N requested). A --confidence stop estimates the share from the drawn."""
    if drawing.sampling != "certain":
        return []
    return [setup.weight(t.request.model) for t in setup.tasks[len(drawing.results) :]]


def _stopped_early(drawing: Drawing, setup: VoteSetup) -> str:
    """What the reason adds when sampling stopped before N: the guarantee, or its absence."""
    drawn, rest = len(drawing.results), setup.n - len(drawing.results)
    if drawing.sampling == "certain":
        return f"; stopped after {drawn} of {setup.n} samples: the other {rest} cannot change it"
    if drawing.sampling == "confident":
        chance = drawing.probability or 0.0
        return (
            f"; stopped after {drawn} of {setup.n} samples, share of those drawn: the leader "
            f"wins the full vote with estimated probability {chance:.2f} (--confidence "
            f"{setup.recipe.vote.confidence:g}), so the full run may pick differently"
        )
    return ""


def fatal_message(exc: FatalLLMError, setup: VoteSetup) -> str:
    """What went wrong in the judge or scorer calls, with a fix that fits a vote."""
    strategy = setup.recipe.vote.strategy
    if isinstance(exc, ContextOverflowError):
        holds = "every candidate" if strategy == "judge" else "a candidate"
        return (
            f"the {strategy} prompt, which holds {holds}, is larger than the context window of "
            f"{setup.judge_model} ({exc.message}); lower -n or --max-tokens, or choose a "
            "--judge-model with a larger context"
        )
    return f"the {strategy} calls failed: {exc}"


def _single(only: Candidate) -> Decision:
    if not only.result.succeeded:
        error = f"the only candidate failed: {only.result.error}"
        return Decision(None, error, EXIT_FAILED, error=error)
    return Decision(only.index, "n=1: no vote needed, returning the single answer", EXIT_OK)


def task_text(task: Task) -> str:
    """The task as a candidate saw it, for judges and scorers (system prompt included)."""
    parts = []
    for message in task.request.messages:
        if message["role"] == "system":
            parts.append(f"(Instructions the candidates were given: {message['content']})")
        else:
            parts.append(str(message["content"]))
    return "\n\n".join(parts)


def vote_report(
    pool: Sequence[Candidate], decision: Decision, setup: VoteSetup, *, sampling: str = "all"
) -> VoteReport:
    """The vote's report for `--format json` and the stderr table."""
    vote = setup.recipe.vote
    details = dict(decision.details)
    # Every vote says how many samples it paid for: early stop draws a prefix of the N.
    details |= {
        "samples_drawn": len(pool),
        "samples_saved": setup.n - len(pool),
        "sampling": sampling,
    }
    if "agreement" not in details and decision.winner is not None:
        usable = [c.index for c in pool if c.result.succeeded]
        matrix = similarity_matrix([pool[i].text for i in usable])
        here = usable.index(decision.winner)
        details["agreement"] = round(mean_similarity(here, matrix, range(len(usable))), 4)
    return VoteReport(
        strategy=vote.strategy if setup.n > 1 else "none",
        n=setup.n,
        seed=setup.seed,
        winner=decision.winner,
        reason=decision.reason,
        error=decision.error,
        share=round(decision.share, 4) if decision.share is not None else None,
        extra=details,
        candidates=[candidate_record(c, decision.winner) for c in pool],
    )


def candidate_record(c: Candidate, winner: int | None) -> dict[str, Any]:
    """One candidate as JSON: its text, model, status and what the vote made of it."""
    return {
        "index": c.index,
        "model": c.model,
        "weight": c.weight,
        "status": c.result.status,
        "eligible": c.eligible,
        "excluded": c.excluded,
        "winner": c.index == winner,
        "answer": c.answer,
        "votes": c.votes,
        "score": c.score,
        "scores": c.scores,
        "note": c.note,
        "text": c.text,
    }


def admit(pool: Sequence[Candidate], *, min_candidates: int) -> tuple[list[str], str | None]:
    """Exclude failed and truncated candidates; (warnings, error when too few are left)."""
    warnings: list[str] = []
    for c in pool:
        if not c.result.succeeded:
            c.excluded = f"failed: {c.result.error}"
    succeeded = [c for c in pool if c.result.succeeded]
    failed = [c for c in pool if not c.result.succeeded]
    if not succeeded:
        return warnings, f"all {len(pool)} candidates failed"
    if len(succeeded) < min_candidates:
        return warnings, (
            f"only {len(succeeded)} of {len(pool)} candidates succeeded; the vote needs at least "
            f"{min_candidates} (min_candidates)"
        )
    if failed:
        names = ", ".join(f"#{c.number} ({c.result.error})" for c in failed)
        warnings.append(f"{len(failed)} of {len(pool)} candidates failed and do not vote: {names}")
    cut = [c for c in succeeded if c.result.status == "truncated"]
    if cut and len(pool) == 1:
        warnings.append(
            f"the only candidate was truncated ({_cut_reason(cut[0])}); returning it anyway "
            "(raise max_tokens for a complete answer)"
        )
    elif cut and len(cut) == len(succeeded):
        warnings.append(
            "every candidate was truncated or empty; voting among them anyway "
            "(raise max_tokens for complete answers)"
        )
    else:
        for c in cut:
            c.excluded = f"truncated ({_cut_reason(c)})"
        if cut:
            names = ", ".join(f"#{c.number}" for c in cut)
            warnings.append(f"excluded truncated or empty candidate(s) {names}")
    return warnings, None


def _cut_reason(c: Candidate) -> str:
    """Why a candidate counts as truncated: its finish_reason (length...), or an empty reply."""
    reason = c.result.completion.finish_reason if c.result.completion else None
    return reason if reason in TRUNCATING_FINISH_REASONS else "empty reply"


def no_winner(error: str, *, exit_code: int = EXIT_FAILED) -> Decision:
    """A decision that could not be made (too few candidates, an unusable judge...)."""
    return Decision(None, error, exit_code, error=error)


Voter = Callable[[list[Candidate], VoteContext], Decision]


VOTERS: dict[str, Voter] = {
    "judge": vote_judge,
    "rubric": vote_rubric,
    "consensus": vote_consensus,
    "weighted": vote_weighted,
}
