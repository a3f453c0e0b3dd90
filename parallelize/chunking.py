"""Cut documents into chunks: exactly N balanced chunks, a token budget per chunk, or one per file.

Chunks are contiguous in path order, so a model (and the merge) sees files in a stable order,
and every input byte lands in exactly one chunk.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .inputs import Document
from .tokens import TokenCounter


@dataclass(frozen=True)
class Part:
    """A whole file, or a line range of one, inside a chunk."""

    path: str
    text: str
    tokens: int
    first_line: int = 1
    last_line: int = 0
    pieces: int = 1  # how many parts the file was cut into
    piece: int = 1

    def framed(self) -> str:
        """The text as the model sees it, labelled with its path (and line range when cut)."""
        attrs = f'path="{self.path}"'
        if self.pieces > 1:
            attrs += (
                f' part="{self.piece}/{self.pieces}" lines="{self.first_line}-{self.last_line}"'
            )
        body = self.text if self.text.endswith("\n") or not self.text else self.text + "\n"
        return f"<file {attrs}>\n{body}</file>"


@dataclass(frozen=True)
class Chunk:
    """One worker's share of the input."""

    index: int
    parts: tuple[Part, ...]

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.parts)

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(p.path for p in self.parts))

    @property
    def text(self) -> str:
        return "\n".join(p.framed() for p in self.parts)

    @property
    def id(self) -> str:
        """A stable id derived from the content, so an unchanged chunk keeps its id."""
        return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True)
class ChunkPlan:
    """The chunks plus any warning the user should see about how they were cut."""

    chunks: list[Chunk]
    warning: str | None = None


def whole(doc: Document) -> Part:
    """A document as a single part."""
    return Part(doc.path, doc.text, doc.tokens, 1, max(1, len(doc.text.splitlines())))


def split_lines(doc: Document, pieces: int, counter: TokenCounter) -> list[Part]:
    """Cut a document into up to `pieces` parts of similar size at line boundaries."""
    lines = doc.text.splitlines(keepends=True)
    pieces = max(1, min(pieces, len(lines)))
    if pieces == 1:
        return [whole(doc)]
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    total = offsets[-1]
    cuts = [0]
    for k in range(1, pieces):
        cut = bisect.bisect_left(offsets, total * k / pieces)
        cut = min(max(cut, cuts[-1] + 1), len(lines) - (pieces - k))
        cuts.append(cut)
    cuts.append(len(lines))
    parts = []
    for i, (start, end) in enumerate(itertools.pairwise(cuts), start=1):
        text = "".join(lines[start:end])
        parts.append(Part(doc.path, text, counter.count(text), start + 1, end, pieces, i))
    return parts


def chunk_count(docs: Sequence[Document], n: int, counter: TokenCounter) -> ChunkPlan:
    """Exactly `n` contiguous chunks balanced by tokens (fewer only if there are too few lines)."""
    total = sum(d.tokens for d in docs) or 1
    target = total / n
    parts: list[Part] = []
    for doc in docs:
        need = math.ceil(doc.tokens / target) if doc.tokens > target else 1
        parts.extend(split_lines(doc, need, counter) if need > 1 else [whole(doc)])
    while len(parts) < n:
        largest = max(range(len(parts)), key=lambda i: parts[i].tokens)
        split = _resplit(parts[largest], counter)
        if len(split) == 1:
            break
        parts[largest : largest + 1] = split
    groups = _partition(parts, min(n, len(parts)))
    warning = None
    if len(groups) < n:
        warning = f"the input has too few lines for {n} chunks; made {len(groups)}"
    return ChunkPlan([Chunk(i, tuple(g)) for i, g in enumerate(groups)], warning)


def chunk_budget(docs: Sequence[Document], budget: int, counter: TokenCounter) -> ChunkPlan:
    """As few contiguous chunks as possible with at most `budget` tokens of input each."""
    groups: list[list[Part]] = [[]]
    used = 0
    for doc in docs:
        parts = [whole(doc)]
        if doc.tokens > budget:
            parts = split_lines(doc, math.ceil(doc.tokens / budget), counter)
        for part in parts:
            if groups[-1] and used + part.tokens > budget:
                groups.append([])
                used = 0
            groups[-1].append(part)
            used += part.tokens
    return ChunkPlan([Chunk(i, tuple(g)) for i, g in enumerate(groups) if g])


def chunk_files(docs: Sequence[Document], budget: int, counter: TokenCounter) -> ChunkPlan:
    """One chunk per file; a file over the budget becomes several chunks."""
    chunks: list[Chunk] = []
    for doc in docs:
        pieces = math.ceil(doc.tokens / budget) if doc.tokens > budget else 1
        for part in split_lines(doc, pieces, counter) if pieces > 1 else [whole(doc)]:
            chunks.append(Chunk(len(chunks), (part,)))
    return ChunkPlan(chunks)


def _resplit(part: Part, counter: TokenCounter) -> list[Part]:
    """Halve a part at a line boundary, keeping its line numbers."""
    doc = Document(part.path, part.text, part.tokens)
    halves = split_lines(doc, 2, counter)
    if len(halves) == 1:
        return [part]
    offset = part.first_line - 1
    return [
        Part(h.path, h.text, h.tokens, h.first_line + offset, h.last_line + offset) for h in halves
    ]


def _partition(parts: Sequence[Part], n: int) -> list[list[Part]]:
    """Cut a sequence into exactly n non-empty contiguous groups of similar token totals."""
    prefix = [0]
    for part in parts:
        prefix.append(prefix[-1] + max(part.tokens, 1))
    cuts = [0]
    for k in range(1, n):
        goal = prefix[-1] * k / n
        cut = bisect.bisect_left(prefix, goal)
        if cut > 0 and goal - prefix[cut - 1] < prefix[cut] - goal:
            cut -= 1
        cut = min(max(cut, cuts[-1] + 1), len(parts) - (n - k))
        cuts.append(cut)
    cuts.append(len(parts))
    groups = [list(parts[a:b]) for a, b in itertools.pairwise(cuts)]
    return _renumber(groups)


def _renumber(groups: list[list[Part]]) -> list[list[Part]]:
    """Give split files consistent `piece/pieces` labels after re-splitting."""
    counts: dict[str, int] = {}
    for group in groups:
        for part in group:
            counts[part.path] = counts.get(part.path, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for group in groups:
        fixed = []
        for part in group:
            seen[part.path] = seen.get(part.path, 0) + 1
            fixed.append(
                Part(
                    part.path,
                    part.text,
                    part.tokens,
                    part.first_line,
                    part.last_line,
                    counts[part.path],
                    seen[part.path],
                )
            )
        out.append(fixed)
    return out
