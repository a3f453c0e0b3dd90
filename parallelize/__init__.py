"""parallelize: run identical LLM calls in parallel and aggregate what they return.

The public API is imported lazily so that `import parallelize` (and `parallelize --help`)
stays fast and pulls in neither typer nor rich.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Endpoint",
    "ParallelizeError",
    "Recipe",
    "RunOptions",
    "RunResult",
    "find_recipe",
    "load_recipe",
    "parse_recipe",
    "run_section",
    "run_vote",
]

_LAZY = {
    "Endpoint": "engine.client",
    "ParallelizeError": "errors",
    "Recipe": "recipe.model",
    "find_recipe": "recipe.load",
    "load_recipe": "recipe.load",
    "parse_recipe": "recipe.load",
    "RunOptions": "engine.session",
    "RunResult": "records",
    "run_section": "run",
    "run_vote": "run",
}

if TYPE_CHECKING:
    from .engine.client import Endpoint
    from .engine.session import RunOptions
    from .errors import ParallelizeError
    from .recipe.load import find_recipe, load_recipe, parse_recipe
    from .recipe.model import Recipe
    from .records import RunResult
    from .run import run_section, run_vote


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'parallelize' has no attribute {name!r}")
