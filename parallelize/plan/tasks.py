"""Turn a recipe plus chunks into identical tasks: one template, one parameter set, varying data.

Sections are chunks × aspects × matrix clones. Every task gets only its own context (its chunk,
its aspect's instructions, its clone's variables); nothing is shared between them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, RecipeError
from ..inputs.frames import escape_body
from ..recipe.limits import fanout_problem
from ..recipe.model import Recipe
from ..recipe.section import Aspect
from ..records import ChatRequest, SectionSource, Task, TaskSource
from .chunking import Chunk, text_id
from .jsonmode import JsonContract, contract_for
from .template import INPUT, check_template, placeholders, render

#: Placeholders a section template may use.
SECTION_VARIABLES = frozenset({INPUT, "paths", "chunk_id"})
#: Placeholders a template may use when the recipe declares aspects.
ASPECT_VARIABLES = frozenset({"aspect", "instructions"})
#: `{{ clone }}` joins a clone's matrix values with this.
CLONE_JOINER = "_"


def build_messages(system: str | None, user: str) -> tuple[dict[str, str], ...]:
    """The chat messages for one call: optional system prompt, then the rendered user prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    return (*messages, {"role": "user", "content": user})


def make_task(
    index: int,
    label: str,
    recipe: Recipe,
    *,
    model: str,
    values: Mapping[str, str],
    source: TaskSource | None = None,
    params: Mapping[str, Any] | None = None,
    suffix: str = "",
) -> Task:
    """One task from the recipe's template; only `values` differ between workers."""
    user = render(recipe.prompt, values, append_input=bool(values.get(INPUT)))
    if suffix:
        user = f"{user.rstrip()}\n\n{suffix}"
    request = ChatRequest(
        model=model,
        messages=build_messages(recipe.system, user),
        params=dict(params if params is not None else recipe.worker_params()),
    )
    return Task(index, label, request, source)


def clone_name(values: Mapping[str, str]) -> str:
    """A clone's name: its matrix values joined (empty without a matrix)."""
    return CLONE_JOINER.join(values.values())


def matrix_clones(matrix: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Every combination of the matrix variables, in declaration order ([{}] without a matrix)."""
    names = list(matrix)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*matrix.values())]


def check_task_count(recipe: Recipe, *, chunks: int | None) -> None:
    """Refuse a fan-out past `max_tasks` by arithmetic, before a single task is built (a
    matrix of ten million clones fails in microseconds instead of exhausting memory).

    `chunks` None: the chunks are not cut yet (at least one).
    """
    problem = fanout_problem(
        chunks=chunks, aspects=len(recipe.aspects), matrix=recipe.matrix, limit=recipe.max_tasks
    )
    if problem:
        raise ConfigError(problem)


def section_variables(recipe: Recipe) -> set[str]:
    """The placeholders this recipe's section template may use."""
    allowed = set(SECTION_VARIABLES)
    if recipe.aspects:
        allowed |= ASPECT_VARIABLES
    if recipe.matrix:
        allowed |= {"clone", *recipe.matrix}
    return allowed


@dataclass(frozen=True)
class SectionTemplate:
    """A recipe whose section template and JSON schemas were checked: once per run."""

    recipe: Recipe
    #: Each aspect's JSON contract (None: free text), keyed by aspect name (None: no aspects).
    contracts: Mapping[str | None, JsonContract | None]
    #: Prompt tokens of a request with an empty chunk, per counter (measured once each).
    overheads: dict[str, int] = field(default_factory=dict, compare=False)


def checked(recipe: Recipe | SectionTemplate) -> SectionTemplate:
    """A checked template as it is; a recipe checked now (for callers that plan only once)."""
    return recipe if isinstance(recipe, SectionTemplate) else check_section_template(recipe)


def check_section_template(recipe: Recipe) -> SectionTemplate:
    """Fail before any request on unknown placeholders, fan-out the template cannot see, or a
    JSON schema that is not one."""
    where = recipe.prompt_where
    check_task_count(recipe, chunks=None)
    check_template(recipe.prompt, section_variables(recipe), where=where)
    used = set(placeholders(recipe.prompt))
    if recipe.aspects and not used & ASPECT_VARIABLES:
        raise RecipeError(
            f"{where}: aspects are declared but the prompt uses neither {{{{ aspect }}}} nor "
            "{{ instructions }}, so every aspect would send the same request"
        )
    if recipe.matrix and not used & {"clone", *recipe.matrix}:
        names = ", ".join(f"{{{{ {v} }}}}" for v in recipe.matrix)
        raise RecipeError(
            f"{where}: the matrix varies {', '.join(recipe.matrix)} but the prompt uses none "
            f"of {names}, so every clone would send the same request"
        )
    aspects: list[Aspect | None] = list(recipe.aspects) or [None]
    contracts = {a.name if a else None: contract_for(recipe, a) for a in aspects}
    for contract in contracts.values():
        if contract is not None:
            contract.check_schema()
    return SectionTemplate(recipe, contracts)


def section_tasks(
    recipe: Recipe | SectionTemplate, chunks: Sequence[Chunk], *, model: str
) -> list[Task]:
    """One identical task per chunk × aspect × matrix clone (clone-major, then aspect, chunk)."""
    template = checked(recipe)
    recipe, contracts = template.recipe, template.contracts
    check_task_count(recipe, chunks=len(chunks))
    aspects: list[Aspect | None] = list(recipe.aspects) or [None]
    tasks: list[Task] = []
    clones = matrix_clones(recipe.matrix)
    # Each chunk's text is joined once, and kept for the next aspect or clone if there is one.
    views: dict[int, tuple[str, str, list[str]]] = {}
    keep = len(clones) * len(aspects) > 1
    for clone in clones:
        for aspect in aspects:
            contract = contracts[aspect.name if aspect else None]
            params = recipe.worker_params()
            if contract is not None:
                params.setdefault("response_format", contract.response_format())
            for k, chunk in enumerate(chunks):
                view = views.get(k)
                if view is None:
                    text = chunk.text
                    view = (text, text_id(text), chunk.paths)
                    if keep:
                        views[k] = view
                text, chunk_id, paths = view
                listed = escape_body("\n".join(paths))  # a name may look like a frame tag
                values = {INPUT: text, "paths": listed, "chunk_id": chunk_id}
                source = SectionSource(
                    chunk_id,
                    tuple(paths),
                    chunk.tokens,
                    aspect=aspect.name if aspect else None,
                    matrix=clone if recipe.matrix else None,
                    clone=clone_name(clone),
                    json=contract is not None,
                )
                label = f"chunk {chunk.index + 1}/{len(chunks)}"
                if aspect is not None:
                    values |= {"aspect": aspect.name, "instructions": aspect.instructions}
                    label += f" [{aspect.name}]"
                if recipe.matrix:
                    values |= {"clone": clone_name(clone), **clone}
                    label += f" [{clone_name(clone)}]"
                tasks.append(
                    make_task(
                        len(tasks),
                        label,
                        recipe,
                        model=model,
                        values=values,
                        source=source,
                        params=params,
                        suffix=contract.instructions() if contract else "",
                    )
                )
    return tasks
