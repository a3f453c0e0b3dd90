"""Reading recipe YAML written by strangers: bounded before anything copies it.

PyYAML shares an aliased value instead of copying it, so a "billion laughs" recipe (aliases of
aliases) parses in microseconds and explodes later, when pydantic validates or JSON dumps it. The
composer here counts alias uses and nesting while it reads, then the size of the document with
every alias expanded is measured on the shared node graph (each node once) before anything is
built from it.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent

from ..errors import RecipeError

#: Alias uses (`*name`) a recipe may make; real recipes need a handful at most.
MAX_ALIASES = 100
#: How deeply mappings and lists may nest (the composer recurses once per level).
MAX_DEPTH = 64
#: Nodes plus scalar characters of the document with every alias expanded. A file without
#: aliases reaches at most about twice its bytes, so this admits any recipe under load's 4 MiB
#: limit and keeps aliases from making one bigger than that.
MAX_EXPANDED = 8 * 1024 * 1024


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses too many aliases and too deep nesting as it reads."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Refused(
                    self.peek_event().start_mark,
                    f"more than {MAX_ALIASES} YAML aliases (*name); write the values out",
                )
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(
                self.peek_event().start_mark, f"YAML nested more than {MAX_DEPTH} levels deep"
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Refused(Exception):
    """A bound was crossed at `mark` (turned into a RecipeError naming file and line)."""

    def __init__(self, mark: yaml.Mark | None, problem: str) -> None:
        super().__init__(problem)
        self.mark = mark
        self.problem = problem


def read_yaml(text: str, *, source: str) -> tuple[yaml.Node | None, Any]:
    """The composed node tree (for error lines) and the data, within the bounds above."""
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            expanded_size(root)
        return root, loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{source}{line}: invalid YAML: {problem}") from None
    except _Refused as exc:
        line = f":{exc.mark.line + 1}" if exc.mark else ""
        raise RecipeError(f"{source}{line}: {exc.problem}") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of 5,000 digits
        raise RecipeError(f"{source}: invalid YAML: {str(exc).split(';')[0]}") from None
    finally:
        loader.dispose()


def expanded_size(root: yaml.Node, budget: int = MAX_EXPANDED) -> int:
    """Nodes plus scalar characters with every alias expanded, measured without expanding.

    Each node is measured once and its size and height reused wherever an alias points at it,
    so a document that would expand to 10^30 nodes costs no more than its text to measure. A
    size past `budget`, nesting past MAX_DEPTH once aliases are followed (anchors chained into
    each other), or an alias that contains itself, raises before anything is built.
    """
    measured: dict[int, tuple[int, int]] = {}  # node -> (expanded size, expanded height)
    open_nodes: set[int] = set()

    def measure(node: yaml.Node, level: int) -> tuple[int, int]:
        key = id(node)
        if key in open_nodes:
            raise _Refused(node.start_mark, "a YAML alias refers to the value that contains it")
        found = measured.get(key)
        if found is None:
            open_nodes.add(key)
            found = _combine(node, [measure(child, level + 1) for child in _children(node)])
            open_nodes.discard(key)
            measured[key] = found
        total, height = found
        if level + height > MAX_DEPTH:
            deeper = f"more than {MAX_DEPTH} levels deep"
            raise _Refused(
                node.start_mark, f"with its YAML aliases followed the recipe nests {deeper}"
            )
        if total > budget:
            raise _Refused(
                node.start_mark,
                f"with its YAML aliases expanded the recipe would exceed {budget:,} nodes and "
                "characters (an alias bomb?); write the values out",
            )
        return found

    return measure(root, 0)[0]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.ScalarNode):
        return []
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return [part for pair in node.value for part in pair]


def _combine(node: yaml.Node, parts: list[tuple[int, int]]) -> tuple[int, int]:
    """A node's expanded size and height from its children's."""
    own = 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
    height = 1 + max((h for _, h in parts), default=0)
    return own + sum(size for size, _ in parts), height
