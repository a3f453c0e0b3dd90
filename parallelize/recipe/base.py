"""The one base of every recipe part, in its own module so recipe.py and its parts share it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for recipe parts: unknown keys are errors and values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
