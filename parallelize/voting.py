"""The parts of `run_vote` that need no connection: check the setup, plan the calls, decide.

run.run_vote opens the engine and runs the candidates; everything before (validation, the model
list, the seed, the tasks) and after (admission, the strategy, the RunResult) lives here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .ballot import Candidate, Decision, VoteContext
from .errors import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigError,
    ContextOverflowError,
    FatalLLMError,
    RecipeError,
)
from .executor import DEFAULT_CONCURRENCY, Executor
from .plan import DEFAULT_VOTE_TEMPERATURE, vote_tasks
from .recipe import Recipe
from .recipe_vote import ModelEntry
from .records import RunResult, Task, TaskResult
from .similarity import mean_similarity, similarity_matrix
from .template import INPUT, placeholders
from .vote import VOTERS, admit, extract_answer, no_winner

#: Judges and scorers should be as deterministic as the endpoint allows.
JUDGE_TEMPERATURE = 0.0
UNKNOWN_MODEL = "(default model)"


@dataclass
class VoteSetup:
    """A checked vote: the final recipe, the task text, the models, and what the run will do."""

    recipe: Recipe
    task: str | None
    models: list[ModelEntry]
    warnings: list[str] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    seed: int = 0

    @property
    def n(self) -> int:
        return self.recipe.vote.n

    @property
    def concurrency(self) -> int:
        wanted = max(self.n, self.recipe.vote.judge_rounds)
        return self.recipe.concurrency or min(wanted, DEFAULT_CONCURRENCY)

    @property
    def judge_model(self) -> str:
        return self.recipe.vote.judge_model or (self.models[0].name if self.models else "")

    def judge_params(self) -> dict[str, Any]:
        """The judge's own parameters when it is one of the ensemble, but always temperature 0."""
        entry = next((m for m in self.models if m.name == self.judge_model), None)
        return {**(entry.params if entry else {}), "temperature": JUDGE_TEMPERATURE}

    def weight(self, model: str) -> float:
        return next((m.weight for m in self.models if m.name == model), 1.0)

    def resolve(self, default_model: str | None) -> VoteSetup:
        """Fill in the model (when it comes from the server), the tasks and the seed."""
        if not self.models:
            self.models = [ModelEntry(name=default_model or UNKNOWN_MODEL)]
        self.tasks = vote_tasks(self.recipe, self.task, models=self.models, n=self.n)
        self.seed = self.recipe.seed if self.recipe.seed is not None else derived_seed(self)
        self.warnings += temperature_warnings(self)
        return self


def prepare_vote(task: str | None, recipe: Recipe, *, env_model: str | None) -> VoteSetup:
    """Check a vote before anything is sent; configuration mistakes raise ConfigError (exit 2)."""
    vote = recipe.vote
    where = f"{recipe.source}: " if recipe.source else ""
    uses_input = INPUT in placeholders(recipe.prompt)
    if task is not None and not task.strip():
        raise ConfigError("TASK is empty: give the task as text, @file, or - for stdin")
    if task is None and uses_input:
        raise ConfigError(
            "missing TASK: give the task as text, @file, or - for stdin",
            hint="or use a recipe whose prompt carries the whole task",
        )
    if vote.strategy == "rubric" and not vote.criteria:
        raise RecipeError(
            f"{where}vote.strategy rubric needs criteria",
            hint="add vote.criteria to the recipe, or pass --criterion 'TEXT::WEIGHT'",
        )
    if vote.n > 1 and vote.min_candidates > vote.n:
        raise RecipeError(
            f"{where}vote.min_candidates ({vote.min_candidates}) is more than n ({vote.n})"
        )
    warnings = []
    if recipe.mode != "vote":
        warnings.append(f"recipe '{recipe.name}' is a {recipe.mode} recipe; voting on its prompt")
    if recipe.models:
        models = list(recipe.models)
    elif recipe.model or env_model:
        models = [ModelEntry(name=recipe.model or env_model or "")]
    else:
        models = []
    if vote.strategy == "weighted" and len({m.weight for m in models}) <= 1:
        warnings.append("weighted: every model has the same weight, so this is a plain consensus")
    warnings += ignored_settings(recipe)
    return VoteSetup(recipe, task, models, warnings)


def ignored_settings(recipe: Recipe) -> list[str]:
    """Say so when a setting does nothing under the chosen strategy."""
    vote, strategy = recipe.vote, recipe.vote.strategy
    ignored = []
    if vote.judge_rounds > 1 and strategy != "judge":
        ignored.append("judge_rounds")
    if vote.criteria and strategy in ("consensus", "weighted"):
        ignored.append("criteria")
    if vote.quorum is not None and strategy in ("judge", "rubric"):
        ignored.append("quorum")
    return [f"{name} does not apply to the {strategy} strategy and is ignored" for name in ignored]


def derived_seed(setup: VoteSetup) -> int:
    """A seed from the request itself: the same vote re-run shuffles (and samples) the same way."""
    first = setup.tasks[0].request
    identity = {
        "messages": first.messages,
        "params": first.params,
        "models": [m.name for m in setup.models],
        "n": setup.n,
        "strategy": setup.recipe.vote.strategy,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    return int(digest[:12], 16)


def temperature_warnings(setup: VoteSetup) -> list[str]:
    """Warn when N identical, deterministic requests would cost N times for one answer."""
    if setup.n < 2 or len(setup.models) > 1:
        return []
    temperature = setup.tasks[0].request.params.get("temperature", DEFAULT_VOTE_TEMPERATURE)
    if temperature != 0:
        return []
    return [
        f"n={setup.n} with one model at temperature 0: the candidates will likely be identical "
        "and each still costs a call (raise --temperature, or add models)"
    ]


def planned_calls(setup: VoteSetup) -> list[dict[str, Any]]:
    """What a run would send: the candidates, then the judge or scorer calls (and their retries)."""
    vote = setup.recipe.vote
    calls: list[dict[str, Any]] = [
        {"kind": "candidate", "model": m.name, "count": len(setup.tasks[i :: len(setup.models)])}
        for i, m in enumerate(setup.models)
    ]
    if setup.n == 1:
        return calls
    scored = [c for c in vote.criteria if c.check is None]
    if vote.strategy == "judge":
        count, kind = vote.judge_rounds, "judge"
    elif vote.strategy == "rubric" and scored:
        count, kind = setup.n, "score"
    else:
        return calls
    calls.append({"kind": kind, "model": setup.judge_model, "count": count})
    retry = f"{kind} retry (only if unusable)"
    calls.append({"kind": retry, "model": setup.judge_model, "count": count})
    return calls


def decide(results: list[TaskResult], setup: VoteSetup, executor: Executor) -> RunResult:
    """Admit the usable candidates, run the strategy, and assemble the RunResult."""
    vote = setup.recipe.vote
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
            )
            try:
                decision = VOTERS[vote.strategy](pool, context)
            except FatalLLMError as exc:  # e.g. an unknown judge model: keep the candidates
                decision = no_winner(fatal_message(exc, setup), exit_code=exc.exit_code)
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
    details = vote_details(pool, decision, setup)
    return RunResult(
        "vote",
        setup.recipe.name,
        ", ".join(m.name for m in setup.models),
        setup.tasks,
        results,
        output=output,
        aggregate_calls=decision.calls,
        warnings=[*setup.warnings, *warnings, *decision.warnings],
        details=details,
        exit_code=decision.exit_code,
    )


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


def vote_details(pool: Sequence[Candidate], decision: Decision, setup: VoteSetup) -> dict:
    """The vote's record for `--format json` and the stderr table."""
    vote = setup.recipe.vote
    details = dict(decision.details)
    if "agreement" not in details and decision.winner is not None:
        usable = [c.index for c in pool if c.result.succeeded]
        matrix = similarity_matrix([pool[i].text for i in usable])
        here = usable.index(decision.winner)
        details["agreement"] = round(mean_similarity(here, matrix, range(len(usable))), 4)
    return {
        "strategy": vote.strategy if setup.n > 1 else "none",
        "n": setup.n,
        "seed": setup.seed,
        "winner": decision.winner,
        "reason": decision.reason,
        "error": decision.error,
        "share": round(decision.share, 4) if decision.share is not None else None,
        **details,
        "candidates": [candidate_record(c, decision.winner) for c in pool],
    }


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
