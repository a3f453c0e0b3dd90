"""Heal a chunk the server refused as too long: send it in parts, then join their answers.

The plan's window can be wrong (a server with a smaller context than it says, a tokenizer that
counts differently), and one refused chunk must not stop a run. Its parts are cut at natural
boundaries (`chunking.split_chunk`), as many as the server's own numbers say are needed, and a
part refused again is split again: at most MAX_HEAL_DEPTH levels and MAX_HEAL_PARTS parts per
chunk. The healed result keeps the chunk's task (number, id, output path), is labelled
`chunk 3/8 (2 parts)` and carries `split` in `--format json`. Only a prompt that cannot fit with
an empty chunk is an error (exit 2): no split can help it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from ..errors import ContextOverflowError, first_few
from ..inputs.tokens import TokenCounter
from ..records import Completion, Task, TaskResult, Usage
from .chunking import Chunk, Costs, split_chunk
from .sections import prompt_overhead
from .tasks import SectionTemplate, section_tasks
from .template import placeholders

#: Levels of splitting a refused chunk (2 parts, then 4, then 8 at most).
MAX_HEAL_DEPTH = 3
#: Parts a refused chunk may become in all.
MAX_HEAL_PARTS = 8
#: Share of the server's window a part may fill: its tokenizer counts unlike ours.
HEAL_FILL = 0.85
#: The requested and the available tokens in llama.cpp's, OpenAI's and vLLM's messages.
_REQUESTED = re.compile(
    r"request \((\d[\d,]*) tokens\)|resulted in (\d[\d,]*) tokens|requested (\d[\d,]*) tokens"
)
_WINDOW = re.compile(r"context (?:size|length)(?: is)? \(?(\d[\d,]*) tokens")

Runner = Callable[[list[Task]], list[TaskResult]]
Joiner = Callable[[Sequence[str]], str]


def overflow_sizes(message: str) -> tuple[int, int] | None:
    """(tokens requested, tokens available) when the server's message says both."""
    asked, window = _REQUESTED.search(message), _WINDOW.search(message)
    if asked is None or window is None:
        return None
    number = next(g for g in asked.groups() if g)
    return int(number.replace(",", "")), int(window.group(1).replace(",", ""))


@dataclass
class _Node:
    """A chunk (or a part of one) sent as one task, and the parts it was split into."""

    task: Task
    chunk: Chunk
    depth: int
    result: TaskResult
    children: list[_Node] = field(default_factory=list)
    #: The refused chunk this node is part of (None: it is that chunk).
    root: _Node | None = None

    def leaves(self) -> Iterator[_Node]:
        if not self.children:
            yield self
        for child in self.children:
            yield from child.leaves()

    def every(self) -> Iterator[_Node]:
        yield self
        for child in self.children:
            yield from child.every()


@dataclass
class Healing:
    """The results with every refused chunk healed (or failed), and what to tell the user."""

    results: list[TaskResult]
    healed: list[TaskResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Healer:
    """Splits refused section chunks and joins their parts' answers, level by level."""

    def __init__(
        self,
        template: SectionTemplate,
        chunks: Sequence[Chunk],
        *,
        model: str,
        counter: TokenCounter,
        join_json: Joiner | None = None,
    ) -> None:
        self.template = template
        self.chunks = chunks
        self.model = model
        self.counter = counter
        self.costs = Costs(counter, paths_listed="paths" in placeholders(template.recipe.prompt))
        self.join_json = join_json
        self._by_id: dict[str, Chunk] | None = None

    def heal(self, results: Sequence[TaskResult], run: Runner) -> Healing:
        """Every refused result replaced by its parts' joined answer; `run` sends tasks."""
        roots = {i: self._root(r) for i, r in enumerate(results) if r.overflow}
        frontier = [n for n in roots.values() if n is not None]
        while frontier:
            children: list[_Node] = []
            for node in frontier:
                root = node.root or node
                node.children = self._split(node, parts=sum(1 for _ in root.leaves()))
                children.extend(node.children)
            if not children:
                break
            done = run([c.task for c in children])
            for child, result in zip(children, done, strict=True):
                child.result = result
            frontier = [c for c in children if c.result.overflow]
        healing = Healing(list(results))
        for index, node in roots.items():
            if node is None:
                healing.results[index] = replace(results[index], overflow=False)
                continue
            healing.results[index] = joined = self._joined(node)
            healing.healed.append(joined)
            if joined.succeeded:
                healing.warnings.append(_healed_warning(node, joined))
        return healing

    def _root(self, result: TaskResult) -> _Node | None:
        section = result.task.section
        if section is None:
            return None
        if self._by_id is None:
            self._by_id = {c.id: c for c in self.chunks}
        chunk = self._by_id.get(section.chunk_id)
        return None if chunk is None else _Node(result.task, chunk, 0, result)

    def _split(self, node: _Node, *, parts: int) -> list[_Node]:
        """The node's parts as new tasks (none when it may not or cannot be split further)."""
        available = MAX_HEAL_PARTS - parts + 1
        if node.depth >= MAX_HEAL_DEPTH or available < 2:
            return []
        wanted = self._parts_needed(node)
        chunks = split_chunk(node.chunk, min(wanted, available), self.counter, self.costs)
        if len(chunks) < 2:
            return []
        section = node.task.section
        assert section is not None, "only section tasks are healed"
        tasks = [
            t
            for t in section_tasks(self.template, chunks, model=node.task.request.model)
            if t.section and (t.section.aspect, t.section.clone) == (section.aspect, section.clone)
        ]
        return [
            _Node(
                replace(
                    t, index=node.task.index, label=_part_label(node.task.label, i, len(tasks))
                ),
                chunk,
                node.depth + 1,
                node.result,
                root=node.root or node,
            )
            for i, (t, chunk) in enumerate(zip(tasks, chunks, strict=True), start=1)
        ]

    def _parts_needed(self, node: _Node) -> int:
        """How many parts the server's numbers call for (2 when it gives none); a prompt that
        cannot fit even with an empty chunk raises ContextOverflowError (exit 2)."""
        sizes = overflow_sizes(node.result.error or "")
        if sizes is None:
            return 2
        requested, window = sizes
        recipe = self.template.recipe
        overhead = prompt_overhead(self.template, self.counter)
        scale = requested / max(1, overhead + node.chunk.cost)  # the server's tokens per ours
        fixed = scale * overhead + (recipe.max_tokens or 0)
        if fixed >= window:
            named, alone = first_few(node.task.paths), round(scale * overhead)
            raise ContextOverflowError(
                f"{node.task.label} ({named}): the prompt alone (about {alone:,} tokens with an "
                f"empty chunk) plus max_tokens ({recipe.max_tokens or 0:,}) does not fit the "
                f"server's context window ({window:,} tokens)",
                status=400,
                hint="shorten the prompt or system prompt, lower --max-tokens, or use a model "
                "with a larger context",
            )
        reserve = recipe.max_tokens or min(1_024, window // 4)
        free = HEAL_FILL * window - scale * overhead - reserve
        if free <= 0:
            return MAX_HEAL_PARTS
        return max(2, math.ceil(scale * node.chunk.cost / free))

    def _joined(self, root: _Node) -> TaskResult:
        """The root's task with its leaves' answers joined in order (or the first failure)."""
        leaves = list(root.leaves())
        attempts = sum(n.result.attempts for n in root.every())
        duration = sum(n.result.duration for n in root.every())  # the calls' time, summed
        section = root.task.section
        assert section is not None, "only section tasks are healed"
        task = root.task
        if root.children:
            label = _parts_label(task.label, len(leaves))
            task = replace(task, label=label, source=replace(section, split=len(leaves)))
        broken = next((n for n in leaves if not n.result.succeeded), None)
        if broken is not None:
            error = broken.result.error or "failed"
            where = f" ({broken.task.label})" if broken is not root else ""
            if broken.result.overflow:
                parts = f"in {len(leaves)} parts" if len(leaves) > 1 else "and cannot be cut"
                error = f"still too long for the server {parts}{where}: {error}"
            elif where:
                error = f"{broken.task.label}: {error}"
            return TaskResult(task, error=error, attempts=max(1, attempts), duration=duration)
        done = [n.result.completion for n in leaves if n.result.completion is not None]
        texts = [c.text.strip() for c in done]
        text = "\n\n".join(texts)
        if section.json and self.join_json is not None:
            text = self.join_json(texts)
        cut = next((c for c in done if c.truncated), None)
        cached = all(c.cached for c in done)
        usage = sum((c.usage for c in done if cached or not c.cached), Usage())
        completion = Completion(
            text,
            (cut or done[0]).finish_reason,
            usage,
            done[0].model,
            latency=sum(c.latency for c in done),
            cached=cached,
            warnings=tuple(dict.fromkeys(w for c in done for w in c.warnings)),
        )
        return TaskResult(task, completion, attempts=attempts, duration=duration)


def _split_label(label: str) -> tuple[str, str]:
    """`chunk 3/8 [aspect] [clone]` -> (`chunk 3/8`, ` [aspect] [clone]`)."""
    head, bracket, rest = label.partition(" [")
    return head, f"{bracket}{rest}"


def _part_label(label: str, i: int, n: int) -> str:
    head, rest = _split_label(label)
    return f"{head} part {i}/{n}{rest}"


def _parts_label(label: str, n: int) -> str:
    head, rest = _split_label(label)
    return f"{head} ({n} parts){rest}"


def _healed_warning(root: _Node, joined: TaskResult) -> str:
    sizes = overflow_sizes(root.result.error or "")
    window = f" ({sizes[1]:,} tokens)" if sizes else ""
    named = first_few(root.task.paths)
    return (
        f"{root.task.label} ({named}) was longer than the server's context window{window}: "
        f"sent in {joined.task.section.split if joined.task.section else 0} parts"
    )
