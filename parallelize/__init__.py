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
    "Endpoint": "client",
    "ParallelizeError": "errors",
    "Recipe": "recipe",
    "find_recipe": "recipe",
    "load_recipe": "recipe",
    "parse_recipe": "recipe",
    "RunOptions": "run",
    "RunResult": "records",
    "run_section": "run",
    "run_vote": "run",
}

if TYPE_CHECKING:
    from .client import Endpoint
    from .errors import ParallelizeError
    from .recipe import Recipe, find_recipe, load_recipe, parse_recipe
    from .records import RunResult
    from .run import RunOptions, run_section, run_vote


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'parallelize' has no attribute {name!r}")
