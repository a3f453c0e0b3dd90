"""The section recipe's fan-out and merge parts: `merge:`, `aspects:`, `guard:` and the matrix
checks, validated like the rest of a recipe.

Kept apart from recipe.py so that each part of a recipe stays a small module; recipe.py imports
these models into `Recipe`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .base import Strict
from .limits import check_path_text

#: How a field of the workers' JSON documents may combine (`merge.rules`).
FieldRuleName = Literal[
    "concat", "union", "sum", "min", "max", "first", "last", "all", "any", "worst"
]
#: Placeholder names a matrix variable may not take: the template already defines them.
RESERVED_VARIABLES = frozenset(
    {"input", "paths", "chunk_id", "aspect", "instructions", "clone", "path", "instruction"}
)
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
ASPECT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
#: An aspect's name becomes a directory of output files: well within a file name's 255 bytes.
MAX_ASPECT_NAME = 100


class FieldRule(Strict):
    """How one JSON field combines across chunks where the default (deep merge) is wrong."""

    rule: FieldRuleName
    scale: list[str] | None = Field(
        None, description="worst: the ordered scale, mildest first (e.g. low, medium, high)"
    )
    dedupe_by: str | None = Field(None, description="concat/union: key that identifies an item")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"rule": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _scale_for_worst(self) -> FieldRule:
        if self.rule == "worst" and (not self.scale or len(set(self.scale)) != len(self.scale)):
            raise ValueError("rule 'worst' needs a scale: a list of distinct values, mildest first")
        if self.rule != "worst" and self.scale is not None:
            raise ValueError(f"scale is only used by rule 'worst' (this rule is '{self.rule}')")
        return self


class Merge(Strict):
    """How section outputs are combined."""

    model_config = ConfigDict(populate_by_name=True)  # extra=forbid, frozen: from Strict

    strategy: Literal["concat", "llm", "json", "files"] = "concat"
    prompt: str | None = Field(
        None, description="reduce prompt for strategy llm; {{ input }} receives the outputs"
    )
    system: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    model: str | None = Field(None, description="llm: the reduce model (default: the workers')")
    context_window: int | None = Field(None, ge=256, description="llm: the reduce model's context")
    max_depth: int | None = Field(None, ge=1, le=32, description="llm: most reduce levels")
    json_schema: dict[str, Any] | None = Field(
        None, alias="schema", description="JSON Schema every worker's JSON answer must match"
    )
    dedupe_by: str | None = Field(None, description="json: key that identifies an array item")
    rules: dict[str, FieldRule] = Field(
        default_factory=dict, description="json: per-field rule by dotted path"
    )
    out_dir: str | None = Field(None, description="files: the directory outputs are written to")
    path: str | None = Field(None, description="files: output path template inside out_dir")

    @field_validator("out_dir", "path")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        return check_path_text(value)


class Aspect(Strict):
    """One named angle every chunk is processed from; the template sees {{ aspect }}."""

    model_config = ConfigDict(populate_by_name=True)  # extra=forbid, frozen: from Strict

    name: str = Field(pattern=ASPECT_NAME, max_length=MAX_ASPECT_NAME)
    instructions: str = Field("", description="data the template receives as {{ instructions }}")
    json_schema: dict[str, Any] | None = Field(
        None, alias="schema", description="this aspect's workers answer JSON matching it"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class Guard(Strict):
    """A screening aspect whose JSON verdict releases or withholds the other aspects' answer."""

    aspect: str = Field("screen", description="the screening aspect")
    flag: str = Field("flagged", description="boolean field; true withholds the answer")
    reason: str = Field("reason", description="string field printed when flagged")


def matrix_as_text(value: Any) -> Any:
    """YAML reads `seed: [1, 2]` as numbers; matrix values are text."""
    if not isinstance(value, Mapping):
        return value
    return {
        k: [str(v) if isinstance(v, int | float) else v for v in vs] if isinstance(vs, list) else vs
        for k, vs in value.items()
    }


def check_aspects(aspects: list[Aspect]) -> list[Aspect]:
    """Aspect names identify results and output paths: they must be distinct."""
    names = [a.name for a in aspects]
    if len(set(names)) != len(names):
        raise ValueError(f"names must be distinct (got {', '.join(names)})")
    return aspects


def check_matrix(matrix: dict[str, list[str]]) -> dict[str, list[str]]:
    """Variables are placeholder names; values are distinct and non-empty."""
    for var, values in matrix.items():
        if not re.match(IDENTIFIER, var) or var in RESERVED_VARIABLES:
            raise ValueError(
                f"'{var}' cannot be a variable name (use letters, digits and _; "
                f"not one of {', '.join(sorted(RESERVED_VARIABLES))})"
            )
        if not values or len(set(values)) != len(values) or not all(values):
            raise ValueError(f"{var}: give a list of distinct, non-empty values")
    return matrix


def check_guard(guard: Guard | None, aspects: Sequence[Aspect]) -> Guard | None:
    """A guard screens with one of the aspects and releases the answer of another."""
    names = [a.name for a in aspects]
    if guard is not None and guard.aspect not in names:
        raise ValueError(
            f"aspect '{guard.aspect}' is not one of the aspects "
            f"({', '.join(names) or 'none declared'})"
        )
    if guard is not None and len(names) < 2:
        raise ValueError("needs an answering aspect besides the screen")
    return guard
