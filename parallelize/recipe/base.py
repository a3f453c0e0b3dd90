"""The one base of every recipe part, in its own module so recipe.py and its parts share it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for recipe parts: unknown keys are errors, values are immutable, numbers finite
    (`max_cost: .inf` would be no budget at all, `.nan` compares false with every limit)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, allow_inf_nan=False)
