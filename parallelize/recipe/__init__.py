"""What to run: pydantic models of a recipe (extra="forbid", frozen) and loading them with
file:line errors.

The names below are imported on first use, so that importing one recipe model does not load the
YAML reader.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "DEFAULT_SECTION_RECIPE",
    "Recipe",
    "builtin_recipes",
    "find_recipe",
    "load_recipe",
    "override",
    "parse_recipe",
]

if TYPE_CHECKING:
    from .load import (
        DEFAULT_SECTION_RECIPE,
        builtin_recipes,
        find_recipe,
        load_recipe,
        override,
        parse_recipe,
    )
    from .model import Recipe


def __getattr__(name: str) -> Any:
    if name == "Recipe":
        return importlib.import_module(".model", __name__).Recipe
    if name in __all__:
        return getattr(importlib.import_module(".load", __name__), name)
    raise AttributeError(f"module 'parallelize.recipe' has no attribute {name!r}")
