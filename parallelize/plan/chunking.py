"""Cut documents into chunks: exactly N balanced chunks, a token budget per chunk, or one per file.

Chunks are contiguous in path order and every input character lands in exactly one chunk (lines
repeated by --overlap aside). A file larger than the budget is split at natural boundaries: between
top-level blocks where possible, else after blank lines, else at line ends; mid-line only when one
line alone exceeds the budget.

Cut points are chosen for stability: among the boundaries that keep a chunk between MIN_FILL and
the budget, the strongest wins, and a boundary's strength comes from the path that follows it, not
from the sizes before it. When one file grows, the cut after it usually stays where it was, so the
chunks after it keep their content, their ids, and their cache entries.

A frame is `<file path="...">` + body + `</file>`: the path XML-escaped, the body escaped so that
no line of it opens or closes a frame (`inputs.frames`; documents arrive escaped, and a piece cut
mid-line gets its first line escaped here). Nothing in a frame is random: the same input gives
byte-identical requests, and so the same cache keys.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..errors import InputError
from ..inputs.frames import escape_attr, escape_lead, needs_lead
from ..inputs.read import Document
from ..inputs.tokens import TokenCounter
from .splitting import Piece, split_region

#: A packed chunk is cut at the strongest boundary that keeps it at least this full.
MIN_FILL = 0.6
#: With --chunks N, a cut may move this fraction of the average chunk from the even split to
#: land on a stronger boundary.
BALANCE_TOLERANCE = 0.1
#: Tokens a chunk's frame may take beyond what is counted (joins between parts, rounding).
PART_SLACK = 1
#: The widest `part=... lines=...` attributes, counted once to bound every split file's frame.
WIDEST_ATTRS = ' part="99999/99999" lines="9999999-9999999"'
#: What closes a frame.
FOOTER = "</file>"
#: What joins the frames of a chunk's parts.
JOIN = "\n"


@dataclass(frozen=True)
class Part:
    """A whole file, or a line range of one, inside a chunk.

    Its text is source[start:end], a slice of the file's text taken when needed, so that a plan
    holds the tree once.
    """

    path: str
    source: str = field(repr=False)
    tokens: int = 0
    first_line: int = 1
    last_line: int = 1
    pieces: int = 1  # how many parts the file was cut into
    piece: int = 1
    overlap: int = 0  # leading lines repeated from the previous part (--overlap)
    start: int = 0
    end: int | None = None  # None: to the end of source

    @property
    def text(self) -> str:
        return self.source[self.start : self.end]

    @property
    def lead(self) -> bool:
        """Whether the part starts mid-line with a frame-like line (it gets escaped here)."""
        return needs_lead(self.source, self.start)

    def framed(self) -> str:
        """The text as the model sees it, labelled with its path (and line range when cut)."""
        return f"{self.header()}{self.body()}{FOOTER}"

    def header(self) -> str:
        """The frame's first line: `<file path="...">` (with the part and lines when cut)."""
        attrs = f'path="{escape_attr(self.path)}"'
        if self.pieces > 1:
            attrs += (
                f' part="{self.piece}/{self.pieces}" lines="{self.first_line}-{self.last_line}"'
            )
        return f"<file {attrs}>\n"

    def body(self) -> str:
        """The text inside the frame: a mid-line start escaped, a last line ended."""
        text = self.text
        if self.lead:
            text = escape_lead(text)
        return text if text.endswith("\n") or not text else text + "\n"


@dataclass(frozen=True)
class Chunk:
    """One worker's share of the input."""

    index: int
    parts: tuple[Part, ...]
    #: Tokens the chunk's text takes in a request: its files plus their frames.
    cost: int = 0

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.parts)

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(p.path for p in self.parts))

    @property
    def text(self) -> str:
        return JOIN.join(p.framed() for p in self.parts)

    @property
    def id(self) -> str:
        """A stable id derived from the content, so an unchanged chunk keeps its id."""
        return text_id(self.text)


def text_id(text: str) -> str:
    """The id of a chunk whose text is `text` (`Chunk.id`, for a caller that holds the text)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True)
class ChunkPlan:
    """The chunks plus any warning the user should see about how they were cut."""

    chunks: list[Chunk]
    warning: str | None = None


class Costs:
    """What a part costs in a request: its text plus the frame (and its path in {{ paths }})."""

    def __init__(self, counter: TokenCounter, *, paths_listed: bool = False) -> None:
        self.counter = counter
        self.paths_listed = paths_listed
        self._frames: dict[str, int] = {}
        self._footer = counter.count("\n</file>") + PART_SLACK
        self._attrs = counter.count(WIDEST_ATTRS)
        self._lead = counter.count("\\")

    def frame(self, path: str, *, split: bool = False) -> int:
        """Tokens around a file's text: `<file path=...>`, `</file>`, the join, the attributes."""
        if path not in self._frames:
            header = self.counter.count(f'<file path="{escape_attr(path)}">\n')
            listed = self.counter.count(path + "\n") if self.paths_listed else 0
            self._frames[path] = header + listed + self._footer
        return self._frames[path] + (self._attrs if split else 0)

    def of(self, part: Part) -> int:
        """A part's tokens in a request: text, frame, and the escape of a mid-line start."""
        lead = self._lead if part.lead else 0
        return part.tokens + self.frame(part.path, split=part.pieces > 1) + lead


def whole(doc: Document) -> Part:
    """A document as a single part."""
    lines = doc.text.count("\n") + (0 if doc.text.endswith("\n") else 1)
    return Part(doc.path, doc.text, doc.tokens, 1, max(1, lines))


def split_document(
    doc: Document,
    budget: int,
    counter: TokenCounter,
    *,
    costs: Costs | None = None,
    overlap: int = 0,
    midline_budget: int | None = None,
) -> list[Part]:
    """The document whole if it fits `budget` (frame included), else pieces that each fit.

    `midline_budget` (default: the budget) is the size above which one line is cut mid-line.
    """
    costs = costs or Costs(counter)
    if doc.tokens + costs.frame(doc.path) <= budget:
        return [whole(doc)]
    room = budget - costs.frame(doc.path, split=True)
    if room < 1:
        raise InputError(
            f"{doc.path}: a budget of {budget} tokens leaves no room for its text",
            hint="raise --chunk-tokens or shorten the prompt",
        )
    midline = room if midline_budget is None else midline_budget - (budget - room)
    pieces = split_region(
        doc.text,
        0,
        len(doc.text),
        doc.segments,
        doc.tokens,
        room,
        counter,
        overlap,
        midline,
        marks=doc.marks,
    )
    return _parts(doc.path, doc.text, pieces)


def chunk_count(
    docs: Sequence[Document],
    n: int,
    counter: TokenCounter,
    *,
    costs: Costs | None = None,
    overlap: int = 0,
    hard_budget: int | None = None,
) -> ChunkPlan:
    """Exactly `n` contiguous chunks balanced by tokens (fewer only if there are too few lines).

    Files larger than an even share are split; `hard_budget` (the room in the context window)
    is where a single line is cut mid-line.
    """
    costs = costs or Costs(counter)
    total = sum(d.tokens + costs.frame(d.path) for d in docs) or 1
    target = total / n
    parts: list[Part] = []
    for doc in docs:
        if doc.tokens + costs.frame(doc.path) > target * (1 + BALANCE_TOLERANCE):
            share = max(1, math.ceil(target))
            parts.extend(
                split_document(
                    doc, share, counter, costs=costs, overlap=overlap, midline_budget=hard_budget
                )
                if share > costs.frame(doc.path, split=True)
                else [whole(doc)]
            )
        else:
            parts.append(whole(doc))
    while len(parts) < n:
        largest = max(range(len(parts)), key=lambda i: parts[i].tokens)
        halves = _halve(parts[largest], counter, overlap)
        if len(halves) == 1:
            break
        parts[largest : largest + 1] = halves
    parts = _renumber(parts)
    weights = [costs.of(p) for p in parts]
    cuts = _partition(weights, _strengths(parts), min(n, len(parts)))
    plan = _chunks(parts, weights, cuts)
    warning = None
    if len(plan) < n:
        warning = f"the input has too few lines for {n} chunks; made {len(plan)}"
    return ChunkPlan(plan, warning)


def chunk_budget(
    docs: Sequence[Document],
    budget: int,
    counter: TokenCounter,
    *,
    costs: Costs | None = None,
    overlap: int = 0,
    min_fill: float = MIN_FILL,
) -> ChunkPlan:
    """Contiguous chunks of at most `budget` tokens each (frames included), cut for stability.

    `min_fill` 1.0 packs greedily (every cut moves after an edit; for comparison).
    """
    costs = costs or Costs(counter)
    parts = [
        part
        for doc in docs
        for part in split_document(doc, budget, counter, costs=costs, overlap=overlap)
    ]
    weights = [costs.of(p) for p in parts]
    cuts = _pack(weights, _strengths(parts), budget, min_fill)
    return ChunkPlan(_chunks(parts, weights, cuts))


def chunk_files(
    docs: Sequence[Document],
    budget: int,
    counter: TokenCounter,
    *,
    costs: Costs | None = None,
    overlap: int = 0,
) -> ChunkPlan:
    """One chunk per file; a file over the budget becomes several chunks."""
    costs = costs or Costs(counter)
    chunks: list[Chunk] = []
    for doc in docs:
        for part in split_document(doc, budget, counter, costs=costs, overlap=overlap):
            chunks.append(Chunk(len(chunks), (part,), costs.of(part)))
    return ChunkPlan(chunks)


def split_chunk(chunk: Chunk, n: int, counter: TokenCounter, costs: Costs) -> list[Chunk]:
    """A chunk the server refused as too long, as up to `n` chunks of similar size: cut between
    files where possible, else inside them at natural boundaries (mid-line only for a line
    that alone is too long). Each keeps the chunk's index; fewer when there are too few lines."""
    target = max(1, math.ceil(chunk.cost / max(1, n)))
    parts: list[Part] = []
    for part in chunk.parts:
        room = target - costs.frame(part.path, split=True)
        if costs.of(part) <= target or room < 1:
            parts.append(part)
            continue
        end = len(part.source) if part.end is None else part.end
        pieces = split_region(part.source, part.start, end, (), part.tokens, room, counter)
        cut = _parts(part.path, part.source, pieces) if len(pieces) > 1 else [part]
        if part.pieces > 1:  # a piece of a piece keeps its label; its lines tell them apart
            cut = [replace(p, pieces=part.pieces, piece=part.piece) for p in cut]
        parts.extend(cut)
    weights = [costs.of(p) for p in parts]
    cuts = _partition(weights, _strengths(parts), min(n, len(parts)))
    return [replace(c, index=chunk.index) for c in _chunks(parts, weights, cuts)]


def _parts(path: str, source: str, pieces: Sequence[Piece]) -> list[Part]:
    """Pieces of one file as numbered parts with their line ranges."""
    out = []
    line, pos = 1, 0
    for i, piece in enumerate(pieces, start=1):
        line += source.count("\n", pos, piece.start)
        pos = piece.start
        last = line + source.count("\n", piece.start, max(piece.start, piece.end - 1))
        part = Part(path, source, piece.tokens, line, last, len(pieces), i, piece.overlap)
        out.append(replace(part, start=piece.start, end=piece.end))
    return out


def _halve(part: Part, counter: TokenCounter, overlap: int) -> list[Part]:
    """Cut a part in two at a natural boundary (never mid-line), keeping its line numbers."""
    cap = max(1, math.ceil(part.tokens / 2))
    end = len(part.source) if part.end is None else part.end
    pieces = split_region(
        part.source, part.start, end, (), part.tokens, cap, counter, overlap, math.inf
    )
    if len(pieces) < 2:
        return [part]
    parts = _parts(part.path, part.source, pieces)
    shift = part.first_line - 1 - part.source.count("\n", 0, part.start)
    return [
        replace(p, first_line=p.first_line + shift, last_line=p.last_line + shift) for p in parts
    ]


def _renumber(parts: Sequence[Part]) -> list[Part]:
    """Give split files consistent `piece/pieces` labels after re-splitting."""
    counts: dict[str, int] = {}
    for part in parts:
        counts[part.path] = counts.get(part.path, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for part in parts:
        seen[part.path] = seen.get(part.path, 0) + 1
        out.append(replace(part, pieces=counts[part.path], piece=seen[part.path]))
    return out


def _hash01(text: str) -> float:
    """A stable pseudo-random number in [0, 1) for a string."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _strengths(parts: Sequence[Part]) -> list[float]:
    """How good a cut is before each part: file boundaries beat cuts inside a file."""
    out = [math.inf]
    for before, part in itertools.pairwise(parts):
        if part.path != before.path:
            out.append(1 + _hash01(part.path))
        else:
            out.append(_hash01(f"{part.path}\0{part.text[:80]}") / 2)
    return out


def _pack(
    weights: Sequence[int], strengths: Sequence[float], budget: int, min_fill: float
) -> list[int]:
    """Cut points (part indices) so that every chunk fits the budget; see the module docstring."""
    cuts: list[int] = []
    start, n = 0, len(weights)
    while True:
        end, total = start, 0
        while end < n and total + weights[end] <= budget:
            total += weights[end]
            end += 1
        if end >= n:
            return cuts
        end = max(end, start + 1)  # a part over the budget alone (only if splitting could not help)
        best, best_key, running = end, (-1.0, 0), 0
        for j in range(start + 1, end + 1):
            running += weights[j - 1]
            if running >= min_fill * budget and (strengths[j], j) > best_key:
                best, best_key = j, (strengths[j], j)
        cuts.append(best)
        start = best


def _partition(weights: Sequence[int], strengths: Sequence[float], n: int) -> list[int]:
    """n - 1 cut points for n non-empty groups of similar weight, on strong boundaries."""
    prefix = [0]
    for weight in weights:
        prefix.append(prefix[-1] + max(weight, 1))
    target = prefix[-1] / n
    cuts: list[int] = []
    for k in range(1, n):
        goal = prefix[-1] * k / n
        low = (cuts[-1] if cuts else 0) + 1
        high = len(weights) - (n - k)
        lo = max(low, bisect.bisect_left(prefix, goal - BALANCE_TOLERANCE * target))
        hi = min(high, bisect.bisect_right(prefix, goal + BALANCE_TOLERANCE * target) - 1)
        if lo <= hi:
            cut = max(range(lo, hi + 1), key=lambda j: (strengths[j], -abs(prefix[j] - goal)))
        else:
            cut = bisect.bisect_left(prefix, goal)
            if cut > 0 and goal - prefix[cut - 1] < prefix[cut] - goal:
                cut -= 1
            cut = min(max(cut, low), high)
        cuts.append(cut)
    return cuts


def _chunks(parts: Sequence[Part], weights: Sequence[int], cuts: Sequence[int]) -> list[Chunk]:
    bounds = [0, *cuts, len(parts)]
    return [
        Chunk(i, tuple(parts[a:b]), sum(weights[a:b]))
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
        if b > a
    ]
