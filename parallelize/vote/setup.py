"""A vote before anything is sent: check the recipe and task, choose models, seed, N tasks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..defaults import DEFAULT_CONCURRENCY, UNKNOWN_MODEL
from ..errors import (
    ConfigError,
    RecipeError,
)
from ..inputs.secrets import Finding, scan, secrets_error
from ..plan.tasks import make_task
from ..plan.template import INPUT, check_template, placeholders
from ..recipe.model import Recipe
from ..recipe.vote import ModelEntry
from ..records import SampleSource, Task

#: Judges and scorers should be as deterministic as the endpoint allows.
JUDGE_TEMPERATURE = 0.0


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


def _redacted(task: str | None, on_secret: str) -> tuple[str | None, list[Finding]]:
    """The TASK with its secrets redacted, as section redacts stdin (`fail`: nothing is sent)."""
    if task is None or on_secret == "allow":
        return task, []
    text, findings = scan("TASK", task)
    if findings and on_secret == "fail":
        raise secrets_error(findings)
    return text, findings


def prepare_vote(task: str | None, recipe: Recipe, *, env_model: str | None) -> VoteSetup:
    """Check a vote before anything is sent; configuration mistakes raise ConfigError (exit 2)."""
    vote = recipe.vote
    where = f"{recipe.source}: " if recipe.source else ""
    uses_input = INPUT in placeholders(recipe.prompt)
    if task is not None and not task.strip():
        raise ConfigError("TASK is empty: give the task as text, @file, or - for stdin")
    task, redacted = _redacted(task, recipe.inputs.on_secret)
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
    check_early_stop(recipe)
    if vote.n > recipe.max_tasks:
        spread = f" over {len(recipe.models)} models" if recipe.models else ""
        raise ConfigError(
            f"the vote would make {vote.n:,} calls ({vote.n:,} samples{spread}), more than "
            f"--max-tasks {recipe.max_tasks:,}; lower -n, or raise --max-tasks or recipe max_tasks"
        )
    if vote.n > 1 and vote.min_candidates > vote.n:
        raise RecipeError(
            f"{where}vote.min_candidates ({vote.min_candidates}) is more than n ({vote.n})"
        )
    warnings = [f"secret redacted from TASK: {f.masked()}" for f in redacted]
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


#: Strategies whose result early stop can foresee: counts of exact answers.
EARLY_STOP_STRATEGIES = ("consensus", "weighted")


def check_early_stop(recipe: Recipe) -> None:
    """Early stop needs counts that only grow: exact answers under consensus or weighted."""
    vote = recipe.vote
    if not vote.stops_early:
        return
    flag = "--early-stop" if vote.early_stop else "--confidence"
    named = f"{flag} (vote.{flag[2:].replace('-', '_')})"
    if vote.strategy not in EARLY_STOP_STRATEGIES:
        raise ConfigError(
            f"{named} works with the consensus and weighted strategies only (the {vote.strategy} "
            f"strategy needs every candidate): use --strategy consensus, or drop {flag}"
        )
    if vote.match_mode != "exact":
        raise ConfigError(
            f"{named} needs exact matching (similar clusters can merge as samples arrive): "
            "add --answer-pattern REGEX or --match exact"
        )


def ignored_settings(recipe: Recipe) -> list[str]:
    """Say so when a setting does nothing under the chosen strategy (or with early stop off)."""
    vote, strategy = recipe.vote, recipe.vote.strategy
    ignored = []
    if vote.judge_rounds > 1 and strategy != "judge":
        ignored.append("judge_rounds")
    if vote.criteria and strategy in ("consensus", "weighted"):
        ignored.append("criteria")
    if vote.quorum is not None and strategy in ("judge", "rubric"):
        ignored.append("quorum")
    notes = [f"{name} does not apply to the {strategy} strategy and is ignored" for name in ignored]
    if vote.confidence is not None and vote.early_stop is False:
        notes.append("confidence is ignored: early stop is off (--no-early-stop)")
    return notes


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


def dry_run_notes(setup: VoteSetup) -> list[str]:
    """What a dry run should add: with early stop, the planned candidates are the most it sends."""
    if not setup.recipe.vote.stops_early or setup.n == 1:
        return []
    return [
        f"early stop: the vote may draw fewer than the {setup.n} candidates planned, which are "
        "the most it sends"
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


#: Placeholders a vote template may use.
VOTE_VARIABLES = frozenset({INPUT})


#: Vote candidates must differ, so sampling is on unless the recipe or a flag says otherwise.
DEFAULT_VOTE_TEMPERATURE = 0.8


def vote_tasks(
    recipe: Recipe, task: str | None, *, models: Sequence[ModelEntry], n: int
) -> list[Task]:
    """N identical attempts at one task, spread over the models round-robin.

    Attempt i is sample i (so identical requests stay distinct); a fixed `seed` becomes seed + i
    so that servers honouring it still return N different samples, reproducibly.
    """
    check_template(recipe.prompt, set(VOTE_VARIABLES), where=recipe.prompt_where)
    base = recipe.worker_params()
    base.setdefault("temperature", DEFAULT_VOTE_TEMPERATURE)
    values = {INPUT: task} if task is not None else {}
    tasks = []
    for i in range(n):
        entry = models[i % len(models)]
        params = {**base, **entry.params}
        if isinstance(params.get("seed"), int):
            params["seed"] += i
        made = make_task(
            i,
            f"candidate {i + 1}/{n}",
            recipe,
            model=entry.name,
            values=values,
            source=SampleSource(entry.name, i),
            params=params,
        )
        tasks.append(replace(made, request=replace(made.request, sample=i)))
    return tasks
