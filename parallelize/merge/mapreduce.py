"""Hierarchical map-reduce: reduce worker outputs in batches that fit the reduce model's context.

Level by level, the parts are packed in order into batches that fit, the batches are reduced in
parallel, and the outputs become the next level's parts, until one batch holds everything and a
final call answers. It always terminates: every intermediate reduce has its output capped well
under the batch budget (so any two outputs fit together next time), the number of levels is
bounded, and a level that does not shrink falls back to ordered concatenation with a warning.
Every part carries the files it came from, so each reduce sees its sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_OK, ConfigError, FatalLLMError
from ..inputs.tokens import TokenCounter, get_counter
from ..plan.tasks import make_task
from ..plan.template import INPUT, check_template, render
from ..plan.window import context_window
from ..recipe.model import Recipe
from ..records import ReduceSource, Task, TaskResult

if TYPE_CHECKING:
    from .context import MergeContext

#: Reduce levels before giving up and concatenating (merge.max_depth overrides).
DEFAULT_MAX_DEPTH = 6
#: Output cap of an intermediate reduce when merge.max_tokens is not set.
DEFAULT_REDUCE_TOKENS = 1_024
#: Below this an intermediate reduce cannot say anything useful: the window is too small.
MIN_REDUCE_TOKENS = 32
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


@dataclass(frozen=True)
class Part:
    """One text to reduce: a worker output or an earlier reduce, with the chunks and files
    it covers."""

    text: str
    first: int
    last: int
    sources: tuple[str, ...]

    def rendered(self) -> str:
        span = (
            f"chunk {self.first}" if self.first == self.last else f"chunks {self.first}-{self.last}"
        )
        files = f" (files: {', '.join(self.sources)})" if self.sources else ""
        return f"## {span}{files}\n\n{self.text.strip()}"


@dataclass(frozen=True)
class Budget:
    """How much a reduce call may read and write in the reduce model's context."""

    model: str
    counter: TokenCounter
    input_tokens: int
    output_tokens: int
    max_depth: int


@dataclass
class Tree:
    """One group's reduction: its current parts, and its final text once done."""

    name: str
    parts: list[Part]
    origin: list[Part] = field(default_factory=list)
    text: str | None = None
    depth: int = 0
    fallback: str | None = None


@dataclass
class ReduceReport:
    """Outputs per group plus what the tree looked like, for the summary."""

    texts: dict[str, str]
    calls: list[TaskResult] = field(default_factory=list)
    levels: list[list[int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: A fatal error in the reduce calls (e.g. an unknown merge.model) makes the run exit 2.
    exit_code: int = EXIT_OK

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


def reduce_budget(recipe: Recipe, *, model: str) -> Budget:
    """The reduce model's context, less the prompt around the input, split into read and write."""
    merge = recipe.merge
    model = merge.model or model
    window = merge.context_window or (None if merge.model else recipe.context_window)
    window = window or context_window(model)
    counter = get_counter(model)
    margin = MARGIN_EXACT if counter.exact else MARGIN_ESTIMATE
    template = merge.prompt or DEFAULT_MERGE_PROMPT
    frame = render(template, {INPUT: "", "instruction": recipe.prompt}, append_input=False)
    overhead = counter.count(frame) + counter.count(_system(recipe) or "") + 2 * MESSAGE_OVERHEAD
    room = int(window * (1 - margin)) - overhead
    # Room kept for the answer; any two intermediate outputs then fit one batch of the next level.
    reserve = min(merge.max_tokens or recipe.max_tokens or DEFAULT_REDUCE_TOKENS, room // 2)
    cap = min(reserve, (room - reserve) // 2)
    if cap < MIN_REDUCE_TOKENS:
        raise ConfigError(
            f"merge: the reduce model's context ({window} tokens) leaves no room to reduce in "
            f"(the merge prompt alone takes about {overhead})",
            hint="raise merge.context_window, choose a larger merge.model, or shorten merge.prompt",
        )
    depth = merge.max_depth or DEFAULT_MAX_DEPTH
    return Budget(model, counter, room - reserve, cap, depth)


def reduce_groups(groups: dict[str, list[Part]], context: MergeContext) -> ReduceReport:
    """Reduce every group to one text; the batches of all groups at one level run together."""
    check_reduce(context.recipe, model=context.model)
    budget = reduce_budget(context.recipe, model=context.model)
    trees = [Tree(name, parts, list(parts)) for name, parts in groups.items() if parts]
    report = ReduceReport({name: "" for name in groups})
    level = 0
    while pending := [t for t in trees if t.text is None]:
        level += 1
        batches_of: dict[str, list[list[Part]]] = {}
        tasks: list[Task] = []
        for tree in pending:
            batches = pack([p for part in tree.parts for p in split_part(part, budget)], budget)
            if len(batches) > 1 and level >= budget.max_depth:
                _fall_back(
                    tree,
                    f"merge: {_named(tree)}still {len(batches)} batches at reduce level {level} "
                    f"(merge.max_depth is {budget.max_depth})",
                )
                continue
            batches_of[tree.name] = batches
            final = len(batches) == 1
            for batch in batches:
                tasks.append(_reduce_task(len(tasks), batch, tree, level, final, context, budget))
        if not tasks:
            break
        report.levels.append([len(b) for bs in batches_of.values() for b in bs])
        try:
            results = context.executor.run(tasks)
        except FatalLLMError as exc:  # no retry helps: keep the worker outputs, exit 2
            report.exit_code = exc.exit_code
            for tree in pending:
                if tree.text is None:
                    _fall_back(tree, f"merge: {_named(tree)}the reduce calls cannot work ({exc})")
            break
        report.calls.extend(results)
        by_tree: dict[str, list[TaskResult]] = {}
        for result in results:
            by_tree.setdefault(_reduced(result).group, []).append(result)
        for tree in pending:
            if tree.name in by_tree:
                _advance(tree, by_tree[tree.name], budget, report)
    for tree in trees:
        report.texts[tree.name] = tree.text or ""
        if tree.fallback:
            report.warnings.append(
                f"{tree.fallback}; fell back to ordered concatenation of the worker outputs"
            )
    return report


def pack(parts: Sequence[Part], budget: Budget) -> list[list[Part]]:
    """Consecutive parts into as few batches as fit the input budget, sizes balanced, in order."""
    sizes = [budget.counter.count(part.rendered()) + 2 for part in parts]
    fewest = len(_greedy(sizes, budget.input_tokens))
    low, high = max(sizes, default=0), budget.input_tokens
    while low < high:  # the smallest batch limit that still needs no more batches than `fewest`
        middle = (low + high) // 2
        if len(_greedy(sizes, middle)) <= fewest:
            high = middle
        else:
            low = middle + 1
    groups = _greedy(sizes, max(low, 1))
    return [[parts[i] for i in group] for group in groups]


def _greedy(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Indices packed in order, a new batch whenever the next one would pass `limit`."""
    groups: list[list[int]] = [[]]
    used = 0
    for index, size in enumerate(sizes):
        if groups[-1] and used + size > limit:
            groups.append([])
            used = 0
        groups[-1].append(index)
        used += size
    return groups


def split_part(part: Part, budget: Budget) -> list[Part]:
    """A part too large for any batch, cut at line boundaries into pieces that fit."""
    if budget.counter.count(part.rendered()) <= budget.input_tokens:
        return [part]
    header = budget.counter.count(Part("", part.first, part.last, part.sources).rendered())
    room = max(MIN_REDUCE_TOKENS, budget.input_tokens - header - 2)
    pieces, current, used = [], [], 0
    for line in _lines_within(part.text, room, budget.counter):
        size = budget.counter.count(line)
        if current and used + size > room:
            pieces.append("".join(current))
            current, used = [], 0
        current.append(line)
        used += size
    pieces.append("".join(current))
    return [Part(text, part.first, part.last, part.sources) for text in pieces if text.strip()]


def _lines_within(text: str, room: int, counter: TokenCounter) -> list[str]:
    """The text's lines, with any single line longer than `room` tokens cut by characters."""
    out = []
    for line in text.splitlines(keepends=True):
        tokens = counter.count(line)
        if tokens <= room:
            out.append(line)
            continue
        step = max(1, len(line) * room // tokens)
        out.extend(line[i : i + step] for i in range(0, len(line), step))
    return out


def _reduce_task(
    index: int,
    batch: Sequence[Part],
    tree: Tree,
    level: int,
    final: bool,
    context: MergeContext,
    budget: Budget,
) -> Task:
    recipe, merge = context.recipe, context.recipe.merge
    reducer = recipe.model_copy(
        update={"prompt": merge.prompt or DEFAULT_MERGE_PROMPT, "system": _system(recipe)}
    )
    params: dict[str, Any] = recipe.worker_params()
    if merge.max_tokens:
        params["max_tokens"] = merge.max_tokens
    if not final:  # capped so that every level shrinks
        params["max_tokens"] = budget.output_tokens
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
