"""Merge every chunk's JSON document into one, by default rules or the recipe's per-field ones.

Default: arrays are concatenated in chunk order, objects are merged key by key (recursively),
equal values stay, and scalars that disagree keep the first value with a warning that names the
field, so the recipe can declare the rule it means (`merge.rules`).

The result is always strict RFC 8259 JSON: a rule whose result is not a finite number a JSON
reader can take (a `sum` that overflows to infinity) gives null, with a warning, and
`dumps_strict` checks the whole document once more before it is written.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from ..recipe.section import FieldRule

#: Conflict warnings reported one by one before the rest are only counted.
MAX_REPORTED_CONFLICTS = 5


@dataclass
class JsonMerger:
    """Folds documents left to right; rules are keyed by dotted field path (`review.verdict`)."""

    rules: Mapping[str, FieldRule] = field(default_factory=dict)
    dedupe_by: str | None = None
    conflicts: dict[str, str] = field(default_factory=dict)
    #: Fields whose rule gave no finite number: they stay null (a later chunk must not restart
    #: a sum that overflowed, which would report a part as the whole).
    nulled: set[str] = field(default_factory=set)

    def merge(self, documents: Sequence[Any]) -> Any:
        """One document from many, in order."""
        self.nulled = set()
        if not documents:
            return None
        return reduce(lambda a, b: self.combine(a, b, ""), documents)

    def warnings(self) -> list[str]:
        """One line per field whose values conflicted (the first few), plus a count of the rest."""
        lines = list(self.conflicts.values())[:MAX_REPORTED_CONFLICTS]
        more = len(self.conflicts) - len(lines)
        if more:
            lines.append(f"json merge: {more} more field(s) disagreed between chunks")
        return lines

    def combine(self, a: Any, b: Any, path: str) -> Any:
        """Two values of the same field into one."""
        rule = self.rules.get(path)
        if rule is not None:
            return self.apply(rule, a, b, path)
        if isinstance(a, dict) and isinstance(b, dict):
            merged = dict(a)
            for key, value in b.items():
                merged[key] = self.combine(a[key], value, _join(path, key)) if key in a else value
            return merged
        if isinstance(a, list) and isinstance(b, list):
            return dedupe([*a, *b], self.dedupe_by, by_value=False) if self.dedupe_by else [*a, *b]
        if a is None or a == b:
            return b
        if b is None:
            return a
        self.conflict(path, f"chunks disagree ({_short(a)} vs {_short(b)}); kept the first")
        return a

    def apply(self, rule: FieldRule, a: Any, b: Any, path: str) -> Any:
        """A declared rule; a value the rule cannot use keeps the first, with a warning."""
        if path in self.nulled:
            return None
        if a is None:
            return b
        if b is None:
            return a
        name = rule.rule
        if name in ("concat", "union"):
            items = [*_as_list(a), *_as_list(b)]
            key = rule.dedupe_by or self.dedupe_by
            if name == "union":
                return dedupe(items, key)
            return dedupe(items, key, by_value=False) if key else items
        if name == "first":
            return a
        if name == "last":
            return b
        if name == "worst":
            scale = rule.scale or []
            ranks = [_scale_rank(scale, value) for value in (a, b)]
            for value, rank in zip((a, b), ranks, strict=True):
                if rank is None:
                    self.conflict(path, f"{_short(value)} is not on the scale; counted as worst")
            worst = [len(scale) if rank is None else rank for rank in ranks]
            return a if worst[0] >= worst[1] else b
        check, op = RULE_OPERATIONS[name]
        same_kind = (_number(a) and _number(b)) or type(a) is type(b)
        if check(a) and check(b) and same_kind:
            result = op(a, b)
            if _number(result) and not representable(result):
                self.nulled.add(path)
                self.conflict(
                    path,
                    f"rule '{name}' gives {_short(result)}, not a finite JSON number; null instead",
                )
                return None
            return result
        self.conflict(
            path, f"rule '{name}' cannot combine {_short(a)} and {_short(b)}; kept the first"
        )
        return a

    def conflict(self, path: str, message: str) -> None:
        """Remember the first problem of a field, for `warnings`."""
        self.conflicts.setdefault(path or "(root)", f"json merge: '{path or '(root)'}': {message}")


def representable(number: float) -> bool:
    """Whether a number can be written as JSON and read back: finite, and an integer short
    enough for Python to print (sys.get_int_max_str_digits)."""
    if isinstance(number, float):
        return math.isfinite(number)
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    return not limit or number.bit_length() < limit * 3  # 3 bits < one decimal digit


def strict(value: Any, path: str = "", problems: list[str] | None = None) -> Any:
    """The value with every number JSON cannot carry replaced by null (each one named in
    `problems`): the last guard before a document is written."""
    if isinstance(value, dict):
        return {k: strict(v, _join(path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if _number(value) and not representable(value):
        if problems is not None:
            problems.append(
                f"json merge: '{path or '(root)'}': {_short(value)} is not a finite "
                "JSON number; null instead"
            )
        return None
    return value


def dumps_strict(value: Any, problems: list[str] | None = None) -> str:
    """One RFC 8259 document, indented: json.dumps(allow_nan=False) cannot fail on it."""
    return json.dumps(strict(value, "", problems), indent=2, ensure_ascii=False, allow_nan=False)


def dedupe(items: Sequence[Any], key: str | None, *, by_value: bool = True) -> list[Any]:
    """Items in order without repeats: by `key` for objects that have it, else by value
    (other items are all kept when `by_value` is false)."""
    seen: set[str] = set()
    out = []
    for item in items:
        if key is not None and isinstance(item, dict) and key in item:
            identity = "k:" + json.dumps(item[key], sort_keys=True, default=str)
        elif by_value:
            identity = "v:" + json.dumps(item, sort_keys=True, default=str)
        else:
            out.append(item)
            continue
        if identity not in seen:
            seen.add(identity)
            out.append(item)
    return out


def _scale_rank(scale: Sequence[Any], value: Any) -> int | None:
    """A value's place on a `worst` scale; None when it is not on it (a list or an object
    never is, and must not raise)."""
    if isinstance(value, list | dict):
        return None
    try:
        return list(scale).index(value)
    except ValueError:
        return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _comparable(value: Any) -> bool:
    return _number(value) or isinstance(value, str)


RULE_OPERATIONS: dict[str, tuple[Callable[[Any], bool], Callable[[Any, Any], Any]]] = {
    "sum": (_number, lambda a, b: a + b),
    "min": (_comparable, min),
    "max": (_comparable, max),
    "all": (_boolean, lambda a, b: a and b),
    "any": (_boolean, lambda a, b: a or b),
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _short(value: Any) -> str:
    if _number(value) and not representable(value):
        return (
            repr(value) if isinstance(value, float) else f"an integer of {value.bit_length()} bits"
        )
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
