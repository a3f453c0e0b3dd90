"""Turn a recipe plus chunks into identical tasks: one template, one parameter set, varying data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from .chunking import Chunk
from .recipe import Recipe
from .recipe_vote import ModelEntry
from .records import ChatRequest, Task
from .template import INPUT, check_template, render

#: Placeholders a section template may use.
SECTION_VARIABLES = frozenset({INPUT, "paths", "chunk_id"})


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
    meta: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Task:
    """One task from the recipe's template; only `values` differ between workers."""
    user = render(recipe.prompt, values)
    request = ChatRequest(
        model=model,
        messages=build_messages(recipe.system, user),
        params=dict(params if params is not None else recipe.worker_params()),
    )
    return Task(index, label, request, dict(meta or {}))


def section_tasks(recipe: Recipe, chunks: Sequence[Chunk], *, model: str) -> list[Task]:
    """One identical task per chunk."""
    check_template(recipe.prompt, set(SECTION_VARIABLES), where=f"{recipe.source or 'prompt'}")
    tasks = []
    for chunk in chunks:
        values = {INPUT: chunk.text, "paths": "\n".join(chunk.paths), "chunk_id": chunk.id}
        meta = {"chunk_id": chunk.id, "paths": chunk.paths, "tokens": chunk.tokens}
        label = f"chunk {chunk.index + 1}/{len(chunks)}"
        tasks.append(make_task(chunk.index, label, recipe, model=model, values=values, meta=meta))
    return tasks


#: Placeholders a vote template may use.
VOTE_VARIABLES = frozenset({INPUT})
#: Vote candidates must differ, so sampling is on unless the recipe or a flag says otherwise.
DEFAULT_VOTE_TEMPERATURE = 0.8


def vote_tasks(
    recipe: Recipe, task: str | None, *, models: Sequence[ModelEntry], n: int
) -> list[Task]:
    """N identical attempts at one task, spread over the models round-robin.

    Attempt i is sample i (so identical requests stay distinct); a fixed `seed` becomes seed + i
    so that servers honouring it still return N different samples, reproducibly.
    """
    check_template(recipe.prompt, set(VOTE_VARIABLES), where=f"{recipe.source or 'prompt'}")
    base = recipe.worker_params()
    base.setdefault("temperature", DEFAULT_VOTE_TEMPERATURE)
    values = {INPUT: task} if task is not None else {}
    tasks = []
    for i in range(n):
        entry = models[i % len(models)]
        params = {**base, **entry.params}
        if isinstance(params.get("seed"), int):
            params["seed"] += i
        made = make_task(
            i,
            f"candidate {i + 1}/{n}",
            recipe,
            model=entry.name,
            values=values,
            meta={"model": entry.name, "attempt": i},
            params=params,
        )
        tasks.append(replace(made, request=replace(made.request, sample=i)))
    return tasks
