"""Plan the map-reduce tree before the first reduce call, so that it provably converges.

From the window the run uses, the merge prompt's cost and the parts' sizes, choose the output
cap of the intermediate reduces (the largest, up to merge.max_tokens, that still converges) and
work out every level: how many calls, reading how many parts, until one final call reads
everything, within merge.max_depth. Convergence is by arithmetic: every part of the next level
is at most the cap (in the counter's tokens: the cap times the ratio of our count to the
server's) plus a bounded heading, an intermediate batch holds at least two such parts, so every
level has fewer parts than the one before. A tree that cannot converge is a ConfigError (exit 2)
naming the window and what to change, before any reduce call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError, first_few
from ..inputs.tokens import TokenCounter
from ..records import TaskResult

#: Below this an intermediate reduce cannot say anything useful.
MIN_REDUCE_TOKENS = 32
#: Our count of a reply over the server's, when the replies do not tell (and the most believed).
DEFAULT_RATIO, MAX_RATIO = 1.0, 4.0
#: Tokens between two parts of a batch.
PART_JOIN = 2
#: Files a part's heading names before it only counts the rest: headings stay bounded.
SHOWN_SOURCES = 8


@dataclass(frozen=True)
class Budget:
    """How much a reduce call may read and write in the reduce model's context."""

    model: str
    counter: TokenCounter
    #: Tokens a call may fill: the window, less the margin and the merge prompt around the input.
    room: int
    #: The final answer's reserve (merge.max_tokens, else the workers' max_tokens, else 1,024).
    final_tokens: int
    #: The intermediate reduce's output cap asked for (the plan may choose less).
    output_tokens: int
    max_depth: int
    window: int
    window_source: str
    #: Tokens of the widest part heading (`## chunks 1-40 (files: ...)`) plus its join.
    heading: int = 0

    @property
    def final_input(self) -> int:
        """What the final call may read."""
        return self.room - self.final_tokens

    def input_for(self, cap: int) -> int:
        """What an intermediate call with output cap `cap` may read."""
        return self.room - cap


@dataclass(frozen=True)
class Level:
    """One level of the tree: calls, the parts they read, and each call's output cap."""

    calls: int
    parts: int
    max_tokens: int
    final: bool


@dataclass(frozen=True)
class ReducePlan:
    """The levels from the parts to one output, and the cap every intermediate reduce gets."""

    budget: Budget
    cap: int
    levels: tuple[Level, ...]
    #: True when planned from upper bounds (each output at its max_tokens): a dry run.
    worst_case: bool = False

    @property
    def calls(self) -> int:
        return sum(level.calls for level in self.levels)

    def record(self) -> dict[str, object]:
        """The plan in `--format json`."""
        return {
            **budget_record(self.budget),
            "worst_case": self.worst_case,
            "output_cap": self.cap,
            "calls": self.calls,
            "levels": [vars(level) for level in self.levels],
        }


def budget_record(budget: Budget) -> dict[str, object]:
    """The window a plan was made in, for `--format json`."""
    return {
        "context_window": budget.window,
        "context_window_source": budget.window_source,
        "tokens_per_call": budget.room,
        "max_depth": budget.max_depth,
    }


def plan_reduce(
    sizes: Sequence[int], budget: Budget, *, ratio: float = DEFAULT_RATIO, worst_case: bool = False
) -> ReducePlan:
    """The tree for parts of these sizes (tokens with their headings), within max_depth.

    The intermediate cap is the largest (up to the budget's) whose tree is at most one level
    deeper than the shallowest possible; no tree within max_depth: ConfigError.
    """
    ratio = min(max(ratio, DEFAULT_RATIO), MAX_RATIO)
    caps = [budget.output_tokens]
    while caps[-1] // 2 > MIN_REDUCE_TOKENS:
        caps.append(caps[-1] // 2)
    trees = {cap: _levels(list(sizes), budget, cap, ratio) for cap in [*caps, MIN_REDUCE_TOKENS]}
    converging = {cap: levels for cap, levels in trees.items() if levels is not None}
    if converging:
        # Every level is a lossy summary: at most one level more than the shallowest tree,
        # with the largest cap that allows (the most said per output).
        shallowest = min(len(levels) for levels in converging.values())
        cap = max(c for c, levels in converging.items() if len(levels) <= shallowest + 1)
        return ReducePlan(budget, cap, tuple(converging[cap]), worst_case)
    deepest = _levels(list(sizes), budget, MIN_REDUCE_TOKENS, ratio, depth=10_000)
    need = f"needs {len(deepest)} levels" if deepest else "cannot shrink to one output"
    raise ConfigError(
        f"merge: the map-reduce of {len(sizes)} output(s) {need} in a context window of "
        f"{budget.window:,} tokens (from {budget.window_source}), more than merge.max_depth "
        f"({budget.max_depth}) allows",
        hint="raise merge.max_depth in the recipe, lower --max-tokens (shorter outputs), set "
        "--context-window (or merge.context_window) to the model's real window, or use "
        "--merge concat",
    )


def _levels(
    sizes: list[int], budget: Budget, cap: int, ratio: float, *, depth: int | None = None
) -> list[Level] | None:
    """The levels with this intermediate cap, or None when they pass the depth or stall."""
    limit = budget.input_for(cap)
    if limit <= 0 or budget.final_input <= 0:
        return None
    levels: list[Level] = []
    most = budget.max_depth if depth is None else depth
    out = math.ceil(ratio * cap) + budget.heading + PART_JOIN
    while True:
        if sum(sizes) <= budget.final_input:
            levels.append(Level(1, len(sizes), budget.final_tokens, True))
            return levels
        if len(levels) + 1 >= most:
            return None
        calls = count_batches(sizes, limit)
        if calls >= len(sizes) and calls * out >= sum(sizes):
            return None  # this level would not shrink
        levels.append(Level(calls, len(sizes), cap, False))
        sizes = [out] * calls


def count_batches(sizes: Sequence[int], limit: int) -> int:
    """Batches that consecutive parts pack into (a part over the limit is cut into pieces)."""
    batches, used = 0, limit
    for size in sizes:
        for piece in _pieces(size, limit):
            if used + piece > limit:
                batches, used = batches + 1, 0
            used += piece
    return batches


def _pieces(size: int, limit: int) -> list[int]:
    if size <= limit:
        return [size]
    n = math.ceil(size / limit)
    return [math.ceil(size / n)] * n


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
        files = f" (files: {first_few(self.sources, SHOWN_SOURCES)})" if self.sources else ""
        return f"## {span}{files}\n\n{self.text.strip()}"


def part_sizes(parts: Sequence[Part], counter: TokenCounter) -> list[int]:
    """Tokens each part takes in a batch: its heading, its text and the join."""
    return [counter.count(part.rendered()) + PART_JOIN for part in parts]


def output_ratio(results: Sequence[TaskResult], counter: TokenCounter) -> float:
    """How many of our tokens one of the server's output tokens makes (at least 1): what an
    output capped at N server tokens may count as when it is read at the next level."""
    ratios = [
        counter.count(r.text) / r.completion.usage.completion_tokens
        for r in results
        if r.completion is not None and r.completion.usage.completion_tokens > 0 and r.text
    ]
    return max([DEFAULT_RATIO, *ratios])


def pack(parts: Sequence[Part], counter: TokenCounter, limit: int) -> list[list[Part]]:
    """Consecutive parts into as few batches as fit `limit` tokens, sizes balanced, in order."""
    sizes = part_sizes(parts, counter)
    fewest = len(_greedy(sizes, limit))
    low, high = max(sizes, default=0), limit
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


def split_part(part: Part, counter: TokenCounter, limit: int) -> list[Part]:
    """A part too large for a batch of `limit` tokens, cut at line boundaries into pieces."""
    if counter.count(part.rendered()) + PART_JOIN <= limit:
        return [part]
    header = counter.count(Part("", part.first, part.last, part.sources).rendered())
    room = max(MIN_REDUCE_TOKENS, limit - header - PART_JOIN)
    pieces, current, used = [], [], 0
    for line in _lines_within(part.text, room, counter):
        size = counter.count(line)
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
