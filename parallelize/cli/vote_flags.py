"""Command-line values for a vote: models, `--weight NAME=W`, `--criterion TEXT::W`, `--check`.

Each parser turns one flag into a validated value or a ConfigError naming the flag and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError
from ..recipe.load import override
from ..recipe.model import Recipe
from ..recipe.vote import CHECKS, Criterion, ModelEntry

#: Separates a --criterion's text from its weight; it does not occur in ordinary prose.
CRITERION_WEIGHT_SEP = "::"


def apply_vote_flags(
    recipe: Recipe,
    *,
    models: Sequence[str] = (),
    weights: Mapping[str, float] | None = None,
    criteria: Sequence[str] = (),
    checks: Sequence[str] = (),
    vote: Mapping[str, Any] | None = None,
    env_model: str | None = None,
) -> Recipe:
    """Flags over a recipe: named models keep their recipe entries; weights must name a model.

    `env_model` (PARALLELIZE_MODEL) is the model a weight may name when nothing else names one.
    """
    values: dict[str, Any] = {}
    known = {m.name: m for m in recipe.models or ()}
    if models:
        chosen = [known.get(name) or ModelEntry(name=name) for name in dict.fromkeys(models)]
        values["models"] = [m.model_dump(exclude_defaults=True) for m in chosen]
    if weights:
        entries = [ModelEntry.model_validate(m) for m in values.get("models", ())]
        entries = entries or list(recipe.models or ())
        if not entries and (recipe.model or env_model):
            entries = [ModelEntry(name=recipe.model or env_model or "")]
        names = [m.name for m in entries]
        for name in weights:
            if name not in names:
                listed = ", ".join(names) or "none given; pass --model or set PARALLELIZE_MODEL"
                raise ConfigError(
                    f"--weight {name}=...: no model named '{name}' (models: {listed})"
                )
        values["models"] = [
            m.model_copy(update={"weight": weights.get(m.name, m.weight)}).model_dump(
                exclude_defaults=True
            )
            for m in entries
        ]
    vote_values = {k: v for k, v in (vote or {}).items() if v is not None}
    if criteria or checks:
        lines = [parse_criterion(c) for c in criteria] + [parse_check(c) for c in checks]
        vote_values["criteria"] = [line.model_dump(exclude_defaults=True) for line in lines]
    if vote_values:
        values["vote"] = vote_values
    return override(recipe, values, replace=("models",))


def parse_weight(raw: str) -> tuple[str, float]:
    """`NAME=W` from --weight (the last '=' splits, so model tags such as a:8b stay whole)."""
    name, sep, value = raw.rpartition("=")
    try:
        weight = float(value)
    except ValueError:
        weight = float("nan")
    if not sep or not name or not weight > 0 or weight == float("inf"):
        raise ConfigError(f"--weight {raw}: expected NAME=W with a positive number W, e.g. gpt=2")
    return name, weight


def parse_criterion(raw: str) -> Criterion:
    """`TEXT` or `TEXT::WEIGHT` from --criterion (`std::vector` without a number stays text)."""
    text, _, tail = raw.rpartition(CRITERION_WEIGHT_SEP)
    try:
        weight = float(tail)
    except ValueError:
        text, weight = raw, 1.0
    try:
        return Criterion(text=text.strip(), weight=weight)
    except (ValueError, ValidationError):
        raise ConfigError(
            f"--criterion {raw!r}: expected TEXT or TEXT::WEIGHT with a positive WEIGHT"
        ) from None


def parse_check(raw: str) -> Criterion:
    """`NAME=VALUE` from --check (`valid_json` needs no value); every check given so is hard."""
    name, _, value = raw.partition("=")
    name = name.strip()
    if name not in CHECKS:
        raise ConfigError(
            f"--check {raw!r}: unknown check '{name}' (choose from {', '.join(CHECKS)})"
        )
    data: Any = (value or True) if name == "valid_json" else value
    if name in ("must_include", "must_not_include"):
        data = [value]
    try:
        return Criterion.model_validate({name: data})
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--check {raw!r}: {problem}") from None
