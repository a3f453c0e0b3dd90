"""What a run reports beside its results: inputs read, estimate, vote, cost and engine figures.

Frozen records the layers fill in and `RunResult` carries; each `record()` gives its keys in
`--format json`, so the document's shape is written next to the data it shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class InputsReport:
    """What a section run read: the token counter, the context window and the input files."""

    counter: str
    context_window: int
    context_window_source: str
    files: int
    bytes: int
    tokens: int
    #: Skipped paths by reason (binary, too large, ignored by .gitignore, ...).
    skipped: Mapping[str, Sequence[str]]
    #: One record per redacted secret: path, line, rule, kind, length (never the value).
    secrets: Sequence[Mapping[str, Any]]
    #: Files decoded from an encoding other than UTF-8.
    encodings: Mapping[str, str]
    #: `12 files, 340 KB, 81,000 tokens (o200k_base); ...`
    summary: str
    #: Share of the window kept free because the counter is not the model's own tokenizer.
    margin: float = 0.0
    #: Which endpoint the window and counter came from (asked, or remembered); "": not asked.
    facts: str = ""

    def record(self) -> dict[str, Any]:
        """Its keys in `--format json`."""
        inputs = ("files", "bytes", "tokens", "skipped", "secrets", "encodings", "summary")
        return {
            "counter": self.counter,
            "counter_margin": self.margin,
            "plan_facts": self.facts,
            "context_window": self.context_window,
            "context_window_source": self.context_window_source,
            "inputs": {name: getattr(self, name) for name in inputs},
        }


@dataclass(frozen=True)
class Estimate:
    """What a set of calls will cost at most: prompt tokens, max output tokens, USD."""

    calls: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    unpriced: tuple[str, ...] = ()


@dataclass(frozen=True)
class VotePlan:
    """A vote's dry run: the strategy, the seed and the calls it would make."""

    strategy: str
    seed: int
    #: {kind, model, count} per kind of call (candidates, judge rounds, scores, retries).
    planned_calls: Sequence[Mapping[str, Any]]

    def record(self) -> dict[str, Any]:
        """Its keys in `--format json`."""
        return {"strategy": self.strategy, "seed": self.seed, "planned_calls": self.planned_calls}


@dataclass(frozen=True)
class VoteReport:
    """How a vote went: the strategy's decision, why, and every candidate."""

    strategy: str
    n: int
    seed: int
    winner: int | None
    reason: str
    error: str | None
    share: float | None
    #: What only this strategy reports (judge rounds, consensus split, rubric scores, ...).
    extra: Mapping[str, Any]
    #: One record per candidate: index, model, weight, status, text and the vote's view of it.
    candidates: Sequence[Mapping[str, Any]]
    #: Who chose the winner: the strategy, or a person (`vote --pick`).
    picked_by: str = "strategy"

    def record(self) -> dict[str, Any]:
        """Its keys in `--format json`."""
        first = ("strategy", "n", "seed", "winner", "picked_by", "reason", "error", "share")
        return {
            **{name: getattr(self, name) for name in first},
            **self.extra,
            "candidates": list(self.candidates),
        }


@dataclass(frozen=True)
class CostReport:
    """What the calls cost and what the cache saved (None: no price known for a model).

    `saved_usd` is what the call cache saved (calls not made); `prompt_cache_saved_usd` what the
    provider's prompt cache saved on calls made (cached tokens at cached_input, not input)."""

    usd: float | None
    saved_usd: float | None
    max_cost: float | None
    unpriced_models: Sequence[str]
    prompt_cache_saved_usd: float | None = None
    #: What the Batch API's rates saved against the list rates; only in runs with --batch.
    batch_saved_usd: float | None = None


@dataclass(frozen=True)
class EngineReport:
    """What the engine knows once the calls are done: cost, requests, throttling, why it stopped."""

    cost: CostReport
    requests: int
    cached: int
    throttled: int
    paced_rpm: float | None
    stopped: str | None
    #: Requests that repeated a failed or throttled one, and calls that failed because the retry
    #: budget refused their retry (too many calls were failing).
    retries: int = 0
    retry_budget_refused: int = 0
    #: USD of each of the run's results by task index, at the run's prices (None: unpriced);
    #: what a call cache hit saved is not in it. Not in `--format json` (its `cost` is the total).
    task_costs: Mapping[int, float | None] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """Its keys in `--format json`."""
        names = (
            *("requests", "cached", "throttled", "paced_rpm", "stopped"),
            *("retries", "retry_budget_refused"),
        )
        cost = {k: v for k, v in vars(self.cost).items() if k != "batch_saved_usd" or v is not None}
        return {"cost": cost, "engine": {n: getattr(self, n) for n in names}}
