"""Combine ALL section outputs into one artifact: MERGERS maps a strategy name to a function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .executor import Executor
from .plan import make_task
from .recipe import Recipe
from .records import TaskResult
from .template import INPUT, check_template

DEFAULT_MERGE_PROMPT = """\
The same instruction was run over consecutive sections of a larger input. Combine the partial
results below into one coherent answer to that instruction. Keep every distinct finding, drop
repetition, and keep file names where the results give them.

Instruction: {{ instruction }}

{{ input }}"""

MERGE_VARIABLES = frozenset({INPUT, "instruction"})


@dataclass
class MergeOutcome:
    """The merged artifact plus the calls the merge itself made."""

    text: str
    calls: list[TaskResult] = field(default_factory=list)


@dataclass(frozen=True)
class MergeContext:
    """What a merger may use beyond the worker results."""

    recipe: Recipe
    model: str
    executor: Executor


def section_header(result: TaskResult) -> str:
    """The heading that names a chunk and its files."""
    paths = ", ".join(result.task.meta.get("paths", []))
    return f"## {result.task.label}: {paths}" if paths else f"## {result.task.label}"


def merge_concat(results: Sequence[TaskResult], context: MergeContext) -> MergeOutcome:
    """Outputs in chunk order, each under a header naming its chunk and files."""
    blocks = [f"{section_header(r)}\n\n{r.text.strip()}" for r in results if r.succeeded]
    return MergeOutcome("\n\n".join(blocks) + "\n" if blocks else "")


def merge_llm(results: Sequence[TaskResult], context: MergeContext) -> MergeOutcome:
    """One reduce call over every worker output with the recipe's merge prompt."""
    merge = context.recipe.merge
    template = merge.prompt or DEFAULT_MERGE_PROMPT
    check_template(template, set(MERGE_VARIABLES), where="merge.prompt")
    joined = merge_concat(results, context).text
    reducer = context.recipe.model_copy(
        update={"prompt": template, "system": merge.system or context.recipe.system}
    )
    params = reducer.worker_params()
    if merge.max_tokens:
        params["max_tokens"] = merge.max_tokens
    task = make_task(
        0,
        "merge",
        reducer,
        model=context.model,
        values={INPUT: joined, "instruction": context.recipe.prompt},
        params=params,
    )
    [call] = context.executor.run([task])
    return MergeOutcome(call.text if call.succeeded else "", [call])


Merger = Callable[[Sequence[TaskResult], MergeContext], MergeOutcome]

MERGERS: dict[str, Merger] = {"concat": merge_concat, "llm": merge_llm}
