"""The recipe's `vote:` block and `models:` ensemble entries, validated like the rest of a recipe.

Kept apart from recipe.py so that each part of a recipe stays a small module; recipe.py imports
these models into `Recipe`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from .base import Strict
from .limits import Params, check_key_env

#: Two candidates at least this similar count as the same answer (`match: similar`).
DEFAULT_SIMILARITY = 0.8
#: Deterministic rubric checks: they need no model call and run before any scoring.
CHECKS = ("max_chars", "min_chars", "regex", "must_include", "must_not_include", "valid_json")
VoteStrategy = Literal["judge", "rubric", "consensus", "weighted"]
DEFAULT_VOTE_N = 3
DEFAULT_MIN_CANDIDATES = 2
#: Judge rounds are parallel calls; more than this is a mistake rather than a vote.
MAX_JUDGE_ROUNDS = 15


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a user's regex, turning a syntax error into a validation message."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def _compiles(pattern: str) -> str:
    compile_pattern(pattern)
    return pattern


#: A regular expression that must compile; it is kept as text.
Pattern = Annotated[str, AfterValidator(_compiles)]


class Criterion(Strict):
    """One rubric line: a `text` a scorer grades 1-10, or one deterministic check."""

    text: str | None = Field(None, min_length=1, description="what a scorer grades 1-10")
    weight: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="its share of the weighted total"
    )
    max_chars: int | None = Field(None, ge=1)
    min_chars: int | None = Field(None, ge=0)
    regex: Pattern | None = Field(None, description="the candidate must contain a match")
    must_include: list[str] | None = None
    must_not_include: list[str] | None = None
    valid_json: bool | None = Field(None, description="the candidate must parse as JSON")
    hard: bool = Field(True, description="a failed hard check puts the candidate out")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"text": value}
        if isinstance(value, dict):
            for key in ("must_include", "must_not_include"):
                if isinstance(value.get(key), str):
                    value = {**value, key: [value[key]]}
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Criterion:
        kinds = [k for k in ("text", *CHECKS) if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = f" (got {', '.join(kinds)})" if kinds else ""
            raise ValueError(f"give exactly one of text, {', '.join(CHECKS)}{got}")
        return self

    @property
    def check(self) -> str | None:
        """The deterministic check this line is, or None for a scored text."""
        return next((k for k in CHECKS if getattr(self, k) is not None), None)

    def describe(self) -> str:
        """How the line reads in prompts and reports: its text, or `check=value`."""
        if self.check is None:
            return self.text or ""
        value = getattr(self, self.check)
        return f"{self.check}={value!r}" if isinstance(value, (str, list)) else f"{self.check}"


class Vote(Strict):
    """How `parallelize vote` samples candidates and picks one."""

    n: int = Field(DEFAULT_VOTE_N, ge=1, description="candidates to generate")
    strategy: VoteStrategy = "judge"
    quorum: float | None = Field(
        None, gt=0, le=1, description="share of the N votes the winner needs (default > 0.5)"
    )
    match: Literal["exact", "similar"] | None = Field(
        None, description="default exact with answer_pattern, else similar"
    )
    similarity: float = Field(
        DEFAULT_SIMILARITY, gt=0, le=1, description="threshold for match: similar"
    )
    answer_pattern: Pattern | None = Field(
        None, description="regex extracting the final answer (group 1 of the last match)"
    )
    output: Literal["candidate", "answer"] = Field(
        "candidate", description="print the winning candidate, or only its extracted answer"
    )
    min_candidates: int = Field(
        DEFAULT_MIN_CANDIDATES, ge=1, description="successful candidates needed to vote"
    )
    judge_model: str | None = None
    judge_rounds: int = Field(1, ge=1, le=MAX_JUDGE_ROUNDS)
    criteria: list[Criterion] = Field(default_factory=list)
    early_stop: bool | None = Field(
        None, description="stop sampling once the rest cannot change the result (default: off)"
    )
    confidence: float | None = Field(
        None, gt=0.5, lt=1, description="stop when the leader wins with this probability"
    )

    @model_validator(mode="after")
    def _answer_needs_pattern(self) -> Vote:
        if self.output == "answer" and not self.answer_pattern:
            raise ValueError("output: answer needs an answer_pattern to extract the answer")
        return self

    @property
    def match_mode(self) -> Literal["exact", "similar"]:
        """`exact` when an answer is extracted, else `similar` (unless set)."""
        return self.match or ("exact" if self.answer_pattern else "similar")

    @property
    def stops_early(self) -> bool:
        """Samples go out in waves: `early_stop`, or a `confidence` unless early_stop is false."""
        return self.early_stop if self.early_stop is not None else self.confidence is not None


class ModelEntry(Strict):
    """One model of an ensemble: its vote weight, and where and how to reach it."""

    name: str = Field(min_length=1)
    weight: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="how much its vote counts (weighted)"
    )
    base_url: str | None = Field(None, description="its endpoint, when not the default one")
    api_key_env: Annotated[str | None, AfterValidator(check_key_env)] = Field(
        None, description="env var with its key (a name ending in _API_KEY)"
    )
    params: Params = Field(default_factory=dict, description="its own request fields")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value
