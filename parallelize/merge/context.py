"""What every merger shares: its inputs (MergeContext), its result (MergeOutcome), grouping.

Results are grouped per matrix clone and aspect, so each group merges on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.executor import Executor
from ..errors import EXIT_OK
from ..inputs.tokens import TokenCounter
from ..plan.jsonreply import JSONReplyError, parse_json_reply
from ..recipe.model import Recipe
from ..records import TaskResult
from .jsonmerge import JsonMerger, dumps_strict

if TYPE_CHECKING:
    from .files import OutputWriter


#: Joins a group's clone and aspect in its heading (`# fr-FR · security`).
GROUP_SEPARATOR = " · "


@dataclass
class MergeOutcome:
    """The merged artifact plus the calls the merge itself made and what it has to report."""

    text: str
    calls: list[TaskResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    exit_code: int = EXIT_OK
    #: The worker results after JSON checks (a repaired answer, or one failed as invalid).
    results: list[TaskResult] | None = None


@dataclass(frozen=True)
class MergeContext:
    """What a merger may use beyond the worker results."""

    recipe: Recipe
    model: str
    executor: Executor
    #: Parsed, validated JSON answers by task index.
    values: Mapping[int, Any] = field(default_factory=dict)
    writer: OutputWriter | None = None
    #: The run's context window and where it came from: the reduce tree is planned in it.
    window: int | None = None
    window_source: str = "the run"
    #: The run's token counter (None: the reduce model's default).
    counter: TokenCounter | None = None
    #: Our count of one of the server's output tokens, measured on the worker outputs.
    ratio: float = 1.0
    #: Filled by the llm merge: each group's reduce plan record, made before its first call.
    plans: dict[str, Any] = field(default_factory=dict)


def section_header(result: TaskResult) -> str:
    """The heading that names a chunk and its files."""
    label = result.task.label.split(" [", 1)[0]
    paths = ", ".join(result.task.paths)
    return f"## {label}: {paths}" if paths else f"## {label}"


def group_key(result: TaskResult) -> tuple[str, str]:
    """(clone, aspect) of a result; empty strings when the run has no matrix or aspects."""
    section = result.task.section
    return (section.clone, section.aspect or "") if section else ("", "")


def grouped(results: Sequence[TaskResult]) -> dict[tuple[str, str], list[TaskResult]]:
    """Results per (clone, aspect), in first-appearance order, chunk order inside."""
    groups: dict[tuple[str, str], list[TaskResult]] = {}
    for result in results:
        groups.setdefault(group_key(result), []).append(result)
    return groups


def group_name(key: tuple[str, str]) -> str:
    return GROUP_SEPARATOR.join(part for part in key if part)


def titled(texts: dict[tuple[str, str], str]) -> str:
    """One group's text as is; several groups each under a `# clone · aspect` heading."""
    if len(texts) == 1:
        return next(iter(texts.values()))
    blocks = [f"# {group_name(key)}\n\n{text.strip()}" for key, text in texts.items()]
    return "\n\n".join(blocks) + "\n"


def json_joiner(recipe: Recipe) -> Callable[[Sequence[str]], str]:
    """How the JSON answers of a chunk sent in parts become one: merged by the recipe's rules
    (text that is not JSON is joined as it is, for the JSON check to repair or fail)."""

    def join(texts: Sequence[str]) -> str:
        try:
            values = [parse_json_reply(text) for text in texts]
        except JSONReplyError:
            return "\n\n".join(texts)
        merged = JsonMerger(recipe.merge.rules, recipe.merge.dedupe_by).merge(values)
        return dumps_strict(merged)

    return join
