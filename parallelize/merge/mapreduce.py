"""Hierarchical map-reduce: reduce worker outputs in batches that fit the reduce model's context.

Level by level, the parts are packed in order into batches that fit, the batches are reduced in
parallel, and the outputs become the next level's parts, until one batch holds everything and a
final call answers. The tree is planned before the first reduce call, in the run's own context
window (`reduceplan`: output caps that make every level shrink and reach one output within
merge.max_depth, else an error), and planned again at each level with the real sizes. A batch
the server still refuses as too long is split and its parts reduced instead; only a reduce call
that fails for another reason falls back to ordered concatenation, with a warning. Every part
carries the files it came from (the first few named), so each reduce sees its sources.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_OK, EXIT_USAGE, ConfigError, FatalLLMError
from ..inputs.tokens import TokenCounter, get_counter
from ..plan.healing import HEAL_FILL, overflow_sizes
from ..plan.sections import RESERVED_OUTPUT_TOKENS
from ..plan.tasks import make_task
from ..plan.template import INPUT, check_template, render
from ..plan.window import context_window
from ..recipe.model import Recipe
from ..records import ReduceSource, Task, TaskResult
from .reduceplan import (
    DEFAULT_RATIO,
    MIN_REDUCE_TOKENS,
    PART_JOIN,
    SHOWN_SOURCES,
    Budget,
    Part,
    ReducePlan,
    budget_record,
    output_ratio,
    pack,
    part_sizes,
    plan_reduce,
    split_part,
)

if TYPE_CHECKING:
    from .context import MergeContext

#: Reduce levels before giving up and concatenating (merge.max_depth overrides).
DEFAULT_MAX_DEPTH = 6
#: Output cap of an intermediate reduce when merge.max_tokens is not set.
DEFAULT_REDUCE_TOKENS = 1_024
#: Times a batch the server refuses as too long is split again.
MAX_BATCH_SPLITS = 3
#: Tokens a chat message costs beyond its text (role, separators), counted generously.
MESSAGE_OVERHEAD = 8
#: Share of the window kept free for counting error: small with tiktoken, larger with estimates.
MARGIN_EXACT = 0.05
MARGIN_ESTIMATE = 0.15

DEFAULT_MERGE_PROMPT = """\
The same instruction was run over consecutive sections of a larger input. Combine the partial
results below into one coherent answer to that instruction. Keep every distinct finding, drop
repetition, and keep file names where the results give them.

Instruction: {{ instruction }}

{{ input }}"""

MERGE_VARIABLES = frozenset({INPUT, "instruction"})


@dataclass
class Tree:
    """One group's reduction: its current parts, and its final text once done."""

    name: str
    parts: list[Part]
    origin: list[Part] = field(default_factory=list)
    text: str | None = None
    depth: int = 0
    fallback: str | None = None
    #: Our count of an output token of the server's (see output_ratio).
    ratio: float = DEFAULT_RATIO


@dataclass
class ReduceReport:
    """Outputs per group plus what the tree looked like, for the summary."""

    texts: dict[str, str]
    calls: list[TaskResult] = field(default_factory=list)
    levels: list[list[int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: A fatal error in the reduce calls (e.g. an unknown merge.model) makes the run exit 2.
    exit_code: int = EXIT_OK
    #: Each tree's plan, made before its first reduce call.
    plans: dict[str, ReducePlan] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return len(self.levels)


def parts_of(results: Sequence[TaskResult], numbers: Sequence[int]) -> list[Part]:
    """Worker outputs as parts, numbered by their chunk and labelled with their files."""
    return [Part(r.text, n, n, r.task.paths) for r, n in zip(results, numbers, strict=True)]


def check_reduce(recipe: Recipe, *, model: str) -> None:
    """Fail while planning, before any worker call is paid for, on a merge prompt with unknown
    placeholders or a reduce model whose context leaves no room to reduce in."""
    check_template(
        recipe.merge.prompt or DEFAULT_MERGE_PROMPT, set(MERGE_VARIABLES), where="merge.prompt"
    )
    reduce_budget(recipe, model=model)


def reduce_budget(
    recipe: Recipe,
    *,
    model: str,
    window: int | None = None,
    window_source: str = "the run",
    counter: TokenCounter | None = None,
    sources: Sequence[str] = (),
) -> Budget:
    """The reduce model's context, less the prompt around the input: what a call may read and
    write. `window` and `counter` are the run's (used unless merge.model names another model);
    `sources` are the files whose names part headings may show."""
    merge = recipe.merge
    own = merge.model is None or merge.model == model
    model = merge.model or model
    if merge.context_window:
        window, window_source = merge.context_window, "merge.context_window"
    elif window and own:
        pass
    elif recipe.context_window and own:
        window, window_source = recipe.context_window, "context_window"
    else:
        window, window_source = context_window(model), "the built-in table"
    counter = counter if counter is not None and own else get_counter(model)
    # The run's counter keeps the planner's margin when it is not the model's own (tiktoken for
    # a Llama), so the reduce tree is planned in the window the map was.
    margin = max(MARGIN_EXACT if counter.exact else MARGIN_ESTIMATE, counter.margin)
    template = merge.prompt or DEFAULT_MERGE_PROMPT
    frame = render(template, {INPUT: "", "instruction": recipe.prompt}, append_input=False)
    overhead = counter.count(frame) + counter.count(_system(recipe) or "") + 2 * MESSAGE_OVERHEAD
    room = int(window * (1 - margin)) - overhead
    # Room kept for the final answer; an intermediate output is capped at most at half the rest.
    reserve = min(merge.max_tokens or recipe.max_tokens or DEFAULT_REDUCE_TOKENS, room // 2)
    cap = min(reserve, (room - reserve) // 2)
    if cap < MIN_REDUCE_TOKENS:
        raise ConfigError(
            f"merge: the reduce model's context ({window} tokens) leaves no room to reduce in "
            f"(the merge prompt alone takes about {overhead})",
            hint="raise merge.context_window, choose a larger merge.model, or shorten merge.prompt",
        )
    depth = merge.max_depth or DEFAULT_MAX_DEPTH
    widest = sorted(set(sources), key=len, reverse=True)[:SHOWN_SOURCES]
    heading = f"## chunks 99999-99999 (files: {', '.join(widest)} (+99999 more))\n\n"
    return Budget(
        model,
        counter,
        room,
        reserve,
        cap,
        depth,
        window,
        window_source,
        counter.count(heading) + PART_JOIN,
    )


def preview_reduce(
    recipe: Recipe,
    tasks: Sequence[Task],
    *,
    model: str,
    window: tuple[int, str],
    counter: TokenCounter | None,
) -> dict[str, Any]:
    """The tree at worst (every output at its max_tokens) in the run's (window, source), for a
    dry run; the run plans it again with the real outputs, before its first reduce call."""
    if recipe.merge.strategy != "llm" or not tasks:
        return {}
    sources = [path for task in tasks for path in task.paths]
    budget = reduce_budget(
        recipe, model=model, window=window[0], window_source=window[1], counter=counter,
        sources=sources,
    )  # fmt: skip
    groups = Counter((t.section.clone, t.section.aspect) for t in tasks if t.section)
    size = (recipe.max_tokens or RESERVED_OUTPUT_TOKENS) + budget.heading
    try:
        plan = plan_reduce([size] * max(groups.values(), default=1), budget, worst_case=True)
    except ConfigError as exc:  # shorter outputs may still converge: the run decides
        return {"reduce_plan": {**budget_record(budget), "worst_case": True, "error": str(exc)}}
    return {"reduce_plan": plan.record()}


def reduce_groups(groups: dict[str, list[Part]], context: MergeContext) -> ReduceReport:
    """Reduce every group to one text; the batches of all groups at one level run together.

    Each tree is planned before its first reduce call (a tree that cannot converge is a
    ConfigError) and planned again at every level with the parts' real sizes.
    """
    check_reduce(context.recipe, model=context.model)
    sources = [s for parts in groups.values() for part in parts for s in part.sources]
    budget = reduce_budget(
        context.recipe,
        model=context.model,
        window=context.window,
        window_source=context.window_source,
        counter=context.counter,
        sources=sources,
    )
    trees = [Tree(name, parts, list(parts)) for name, parts in groups.items() if parts]
    report = ReduceReport({name: "" for name in groups})
    for tree in trees:
        tree.ratio = context.ratio
        plan = plan_reduce(part_sizes(tree.parts, budget.counter), budget, ratio=tree.ratio)
        report.plans[tree.name] = plan
        context.plans[tree.name] = plan.record()
    level = 0
    while pending := [t for t in trees if t.text is None]:
        level += 1
        work: list[_Call] = []
        for tree in pending:
            work.extend(_level_calls(tree, level, context, budget, len(work)))
        if not work:
            break
        report.levels.append([len(call.batch) for call in work])
        try:
            _run_calls(work, context, budget, report)
        except FatalLLMError as exc:  # no retry helps: keep the worker outputs, exit 2
            report.exit_code = exc.exit_code
            for tree in pending:
                if tree.text is None:
                    _fall_back(tree, f"merge: {_named(tree)}the reduce calls cannot work ({exc})")
            break
        report.calls.extend(call.result for call in work if call.result is not None)
        for tree in pending:
            done = [c.result for c in work if c.tree is tree and c.result is not None]
            if done and tree.text is None:
                _advance(tree, done, budget, report)
    for tree in trees:
        report.texts[tree.name] = tree.text or ""
        if tree.fallback:
            report.warnings.append(
                f"{tree.fallback}; fell back to ordered concatenation of the worker outputs"
            )
    return report


@dataclass
class _Call:
    """One reduce call of a level: its tree, the parts it reads, its task and result."""

    tree: Tree
    batch: list[Part]
    task: Task
    final: bool
    cap: int
    result: TaskResult | None = None


def _level_calls(
    tree: Tree, level: int, context: MergeContext, budget: Budget, first: int
) -> list[_Call]:
    """This level's calls for one tree, as its plan (made again with the real sizes) says."""
    left = replace(budget, max_depth=max(1, budget.max_depth - tree.depth))
    try:
        plan = plan_reduce(part_sizes(tree.parts, budget.counter), left, ratio=tree.ratio)
    except ConfigError as exc:  # outputs longer than their cap (a server that ignores it)
        shrank = f"reduce level {tree.depth} did not shrink enough to finish"
        _fall_back(tree, f"merge: {_named(tree)}{shrank}: {exc.message}")
        return []
    step = plan.levels[0]
    if step.final:
        batches = [list(tree.parts)]
    else:
        limit = budget.input_for(plan.cap)
        pieces = [p for part in tree.parts for p in split_part(part, budget.counter, limit)]
        batches = pack(pieces, budget.counter, limit)
    calls = []
    for batch in batches:
        index = first + len(calls)
        task = _reduce_task(index, batch, tree, level, step.final, context, budget, plan.cap)
        calls.append(_Call(tree, batch, task, step.final, plan.cap))
    return calls


def _run_calls(
    work: list[_Call], context: MergeContext, budget: Budget, report: ReduceReport
) -> None:
    """Run one level's calls; a batch the server refuses as too long is split and its parts
    run instead (at most MAX_BATCH_SPLITS times), their outputs read at the next level."""
    todo = list(work)
    for splits in range(MAX_BATCH_SPLITS + 1):
        results = context.executor.run([c.task for c in todo], keep_overflows=True)
        for call, result in zip(todo, results, strict=True):
            call.result = result
        refused = [c for c in todo if c.result is not None and c.result.overflow]
        if not refused or splits == MAX_BATCH_SPLITS:
            break
        todo = []
        for call in refused:
            halves = _split_batch(call, budget)
            if len(halves) < 2:
                continue
            at = work.index(call)
            level = _reduced(call.result).level if call.result else 0
            parts = [
                _Call(call.tree, half, _again(call, half, level, context, budget), False, call.cap)
                for half in halves
            ]
            work[at : at + 1] = parts
            todo.extend(parts)
        if not todo:
            break
    for call in work:
        if call.result is not None and call.result.overflow:  # no split could help: fails
            if _prompt_too_long(call, budget):
                report.exit_code = EXIT_USAGE
            call.result = replace(call.result, overflow=False)


def _again(
    call: _Call, half: list[Part], level: int, context: MergeContext, budget: Budget
) -> Task:
    """A part of a refused batch as its own (capped, intermediate) reduce call."""
    index = call.task.index
    return _reduce_task(index, half, call.tree, level, False, context, budget, call.cap)


def _split_batch(call: _Call, budget: Budget) -> list[list[Part]]:
    """A refused batch as smaller batches: as many as the server's numbers call for."""
    sizes = overflow_sizes(call.result.error or "") if call.result else None
    wanted = 2
    if sizes is not None:
        requested, window = sizes
        wanted = max(2, math.ceil(requested / max(1, HEAL_FILL * window - call.cap)))
    counter = budget.counter
    total = sum(part_sizes(call.batch, counter))
    limit = max(MIN_REDUCE_TOKENS, math.ceil(total / wanted))
    pieces = [p for part in call.batch for p in split_part(part, counter, limit)]
    return pack(pieces, counter, limit) if len(pieces) > 1 else [call.batch]


def _prompt_too_long(call: _Call, budget: Budget) -> bool:
    """Whether the merge prompt itself (with the smallest batch) is what does not fit."""
    return sum(part_sizes(call.batch, budget.counter)) <= 2 * MIN_REDUCE_TOKENS


def _reduce_task(
    index: int,
    batch: Sequence[Part],
    tree: Tree,
    level: int,
    final: bool,
    context: MergeContext,
    budget: Budget,
    cap: int,
) -> Task:
    recipe, merge = context.recipe, context.recipe.merge
    reducer = recipe.model_copy(
        update={"prompt": merge.prompt or DEFAULT_MERGE_PROMPT, "system": _system(recipe)}
    )
    params: dict[str, Any] = recipe.worker_params()
    if merge.max_tokens:
        params["max_tokens"] = merge.max_tokens
    if not final:  # capped as planned, so that every level shrinks
        params["max_tokens"] = cap
    sources = tuple(dict.fromkeys(s for part in batch for s in part.sources))
    first, last = batch[0].first, batch[-1].last
    span = f"{first}-{last}" if first != last else f"{first}"
    label = f"{'merge' if final else f'reduce L{level}'} {_named(tree)}chunks {span}".strip()
    source = ReduceSource(tree.name, level, final, first, last, sources)
    values = {INPUT: "\n\n".join(p.rendered() for p in batch), "instruction": recipe.prompt}
    return make_task(
        index, label, reducer, model=budget.model, values=values, source=source, params=params
    )


def _advance(
    tree: Tree,
    results: list[TaskResult],
    budget: Budget,
    report: ReduceReport,
) -> None:
    """Take one level's outputs: finish, fall back, or carry them to the next level."""
    tree.depth += 1
    broken = [r for r in results if not r.succeeded]
    if broken:
        _fall_back(tree, f"merge: {_named(tree)}a reduce call failed ({broken[0].error})")
        return
    for result in results:
        if result.status == "truncated":
            report.warnings.append(
                f"merge: {result.task.label} was cut at its output cap; raise merge.max_tokens "
                "if the combined answer misses something"
            )
    if len(results) == 1 and _reduced(results[0]).final:
        tree.text = results[0].text
        return
    tree.ratio = max(tree.ratio, output_ratio(results, budget.counter))
    new = [Part(r.text, _reduced(r).first, _reduced(r).last, r.task.paths) for r in results]
    before = sum(budget.counter.count(p.rendered()) for p in tree.parts)
    after = sum(budget.counter.count(p.rendered()) for p in new)
    if len(new) >= len(tree.parts) and after >= before:
        _fall_back(
            tree,
            f"merge: {_named(tree)}reduce level {tree.depth} did not shrink "
            f"({len(new)} parts, {after} tokens)",
        )
        return
    tree.parts = new


def _fall_back(tree: Tree, reason: str) -> None:
    """Give up on reducing: the workers' own outputs in order, so nothing is lost."""
    tree.text = "\n\n".join(p.rendered() for p in tree.origin) + "\n"
    tree.fallback = reason


def _named(tree: Tree) -> str:
    return f"{tree.name}: " if tree.name else ""


def _system(recipe: Recipe) -> str | None:
    return recipe.merge.system or recipe.system


def _reduced(result: TaskResult) -> ReduceSource:
    """What a reduce call covered (every task this module runs is one)."""
    source = result.task.source
    assert isinstance(source, ReduceSource), "a reduce result without its ReduceSource"
    return source
