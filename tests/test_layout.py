"""Drift guards for the package's shape: the pipeline's folders stay small and only `render` and
the CLI's app module print (the import direction itself is `make lint`'s import-linter contract).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from parallelize.records import RunResult

PACKAGE = Path(__file__).resolve().parents[1] / "parallelize"
MODULES = sorted(PACKAGE.rglob("*.py"))
#: Who may write to the terminal: the renderer, and the app module's entry point.
PRINTERS = ("render/", "cli/app.py")
MAX_LINES = 450


def _writes_to_terminal(tree: ast.AST) -> list[int]:
    """Lines that print, echo or touch sys.stdout / sys.stderr."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "print":
                found.append(node.lineno)
        elif isinstance(node, ast.Attribute):
            if node.attr in ("stdout", "stderr") and ast.unparse(node.value) == "sys":
                found.append(node.lineno)
            if node.attr in ("echo", "secho") and ast.unparse(node.value) == "typer":
                found.append(node.lineno)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_render_and_the_app_module_print(path: Path) -> None:
    rel = path.relative_to(PACKAGE).as_posix()
    if rel.startswith(PRINTERS):
        return
    assert _writes_to_terminal(ast.parse(path.read_text())) == [], f"{rel} writes to the terminal"


def test_modules_stay_small_and_the_top_level_shows_the_pipeline() -> None:
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in MODULES}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top
    assert not any("meta[" in p.read_text() for p in MODULES)


def test_the_details_mapping_is_read_only() -> None:
    result = RunResult("section", "r", "m", [])
    with pytest.raises(TypeError, match="read-only"):
        result.details["extra"] = 1  # type: ignore[index]
