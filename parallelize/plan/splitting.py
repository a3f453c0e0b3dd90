"""Cut one long text into pieces that fit a token budget, at the most natural boundaries.

Boundaries, strongest first: the start of a top-level block (a line at column 0 after a blank
line: a definition in most languages, a heading or paragraph in prose), any line after a blank
line, any line end. Mid-line cuts (after a space where possible) happen only for a line that alone
exceeds the budget.

Sizes are known exactly at the segment ends the text was counted in (see tokens.segment_offsets)
and interpolated in between; a piece that does not end on such a boundary is counted once more,
and shrunk if the interpolation was optimistic. Most pieces of code end on a top-level boundary,
which is also where segments end, so most splits cost no recount.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from ..inputs.tokens import TokenCounter, is_safe_cut, sums_exactly

#: A piece is cut at the strongest boundary that keeps it at least this full.
SPLIT_MIN_FILL = 0.6
#: Boundary strengths.
TOP, BLANK, LINE = 3.0, 2.0, 1.0
#: Bonus for a boundary whose count is already exact (a segment end, always a line at column 0):
#: it outranks every inexact one, because cutting there costs no recount.
EXACT_BONUS = 3.0
#: A mid-line cut looks back this fraction of the piece for a space to cut before.
SOFT_CUT_WINDOW = 0.2
#: Most shrink rounds for a piece whose exact count came out over the budget.
MAX_SHRINKS = 12
#: First characters of lines that do not start a top-level block (indented, blank, closing).
_NOT_TOP = frozenset(("", " ", "\t", "\r", ")", "]", "}"))


@dataclass(frozen=True)
class Piece:
    """A slice text[start:end] with its exact token count and leading repeated lines."""

    start: int
    end: int
    tokens: int
    overlap: int = 0


def split_region(
    text: str,
    start: int,
    end: int,
    segments: Sequence[tuple[int, int]],
    tokens: int,
    room: int,
    counter: TokenCounter,
    overlap: int = 0,
    midline: float | None = None,
    marks: Sequence[tuple[int, int]] = (),
) -> list[Piece]:
    """Pieces of text[start:end] (`tokens` in all) of at most `room` tokens each.

    `segments` are (end offset, tokens) of exactly counted segments of the whole text; `overlap`
    repeats that many lines of the previous piece; lines over `midline` tokens (default `room`)
    are cut mid-line, shorter lines are never cut. `marks` (offset, tokens before it) are where
    the whole text's count is known exactly (`inputs.counting`): they only save counting.
    """
    anchors = _anchors(start, end, segments, tokens)
    exact = _Exact(text, counter, anchors, marks)
    if overlap or len(anchors) <= 2:
        return _Splitter(text, start, end, anchors, room, exact, overlap, midline).run()
    # Whole segments first: their counts are exact and their ends are natural boundaries, so
    # only a segment larger than the room is looked at line by line.
    pieces: list[Piece] = []
    k = 0
    while k < len(anchors) - 1:
        (a, ta), (b, tb) = anchors[k], anchors[k + 1]
        if tb - ta > room:
            seg = [(a, 0), (b, tb - ta)]
            pieces.extend(_Splitter(text, a, b, seg, room, exact.within(seg), 0, midline).run())
            k += 1
            continue
        j = _best_anchor(text, anchors, k, room)
        pieces.append(Piece(a, anchors[j][0], anchors[j][1] - ta))
        k = j
    return pieces


def _best_anchor(text: str, anchors: Sequence[tuple[int, int]], k: int, room: int) -> int:
    """The anchor to end a piece starting at anchor k: strongest in the window, else furthest."""
    base = anchors[k][1]
    j_max = k + 1
    while j_max + 1 < len(anchors) and anchors[j_max + 1][1] - base <= room:
        j_max += 1
    if j_max == len(anchors) - 1:
        return j_max
    best, best_key = j_max, (-1.0, 0)
    for j in range(j_max, k, -1):
        if anchors[j][1] - base < SPLIT_MIN_FILL * room:
            break
        key = (_strength_at(text, anchors[j][0]), j)
        if key > best_key:
            best, best_key = j, key
    return best


def _strength_at(text: str, offset: int) -> float:
    """Strength of a cut at a line start (see the module docstring)."""
    previous = text.rfind("\n", 0, offset - 1)
    blank = not text[previous + 1 : offset].strip()
    top = text[offset : offset + 1] not in _NOT_TOP
    return (TOP if top else BLANK) if blank else LINE


class _Splitter:
    """Line-level splitting of one region, with exact counts at `anchors`."""

    def __init__(
        self,
        text: str,
        start: int,
        end: int,
        anchors: list[tuple[int, int]],
        room: int,
        exact: _Exact,
        overlap: int,
        midline: float | None,
    ) -> None:
        self.text, self.end, self.room = text, end, room
        self.counter, self._exact = exact.counter, exact.count
        self.overlap = overlap
        self.midline = room if midline is None else midline
        lines = text[start:end].split("\n")
        if len(lines) > 1 and not lines[-1]:
            lines.pop()  # the text ends with a newline: no empty last line
        lengths = list(itertools.accumulate(map(len, lines)))
        self.starts = [start] + [start + n + k for k, n in enumerate(lengths[:-1], start=1)]
        self.bounds = [*self.starts, end]  # bounds[i]..bounds[i + 1] is line i
        self.anchors = anchors
        self.anchor_at = dict(self.anchors)
        self.cum = _interpolated(self.bounds, self.anchors)
        self.strength = self._strengths(lines)

    def run(self) -> list[Piece]:
        pieces: list[Piece] = []
        i, lines = 0, len(self.starts)
        line_cut = False  # whether the previous piece ended at a line boundary
        while i < lines:
            ov = self._overlap_lines(i, pieces) if line_cut else 0
            piece, j = self._fit(i, ov)
            if piece.tokens > self.room and ov:  # repeated lines pushed one line over: drop them
                piece, j = self._fit(i, 0)
            if piece.tokens > self.midline:  # one line alone is too long: cut it mid-line
                pieces.extend(self._midline(self.bounds[i], self.bounds[i + 1]))
                i, line_cut = i + 1, False
                continue
            pieces.append(piece)
            i, line_cut = j, True
        return pieces

    def _overlap_lines(self, i: int, pieces: Sequence[Piece]) -> int:
        """Lines to repeat before line i: at most --overlap, from the previous piece, half room."""
        previous = pieces[-1]
        first = bisect.bisect_left(self.starts, previous.start) + previous.overlap
        ov = min(self.overlap, i - first - 1)
        while ov > 0 and self.cum[i] - self.cum[i - ov] > self.room / 2:
            ov -= 1
        return max(ov, 0)

    def _best_end(self, i: int, limit: float) -> int:
        """Where a piece starting at line i ends: the strongest boundary in its window.

        Returns the index of the first line after the piece (len(lines) for the region's end),
        or i when line i alone is over the limit.
        """
        base = self.cum[i]
        j_max = bisect.bisect_right(self.cum, base + limit, lo=i) - 1
        if j_max <= i:
            return i
        if j_max >= len(self.starts):
            return len(self.starts)
        floor = base + SPLIT_MIN_FILL * limit
        best, best_key = j_max, (-1.0, 0)
        for j in range(j_max, i, -1):
            if self.cum[j] < floor:
                break
            key = (self.strength[j], j)
            if key > best_key:
                best, best_key = j, key
        return best

    def _fit(self, i: int, ov: int) -> tuple[Piece, int]:
        """The piece from line i (after `ov` repeated lines), counted exactly, shrunk to fit.

        It is over the room only when it is a single line.
        """
        piece_start = self.bounds[i - ov]
        limit = self.room - (self.cum[i] - self.cum[i - ov])
        j = max(i + 1, self._best_end(i, limit))
        for _ in range(MAX_SHRINKS):
            tokens = self._exact(piece_start, self.bounds[j])
            if tokens <= self.room or j == i + 1:
                break
            limit *= self.room / tokens * 0.97
            j = max(i + 1, min(j - 1, self._best_end(i, limit)))
        else:
            tokens = self._exact(piece_start, self.bounds[j])
        return Piece(piece_start, self.bounds[j], tokens, ov), j

    def _midline(self, a: int, b: int) -> list[Piece]:
        """Cut one long line into pieces of at most `room` tokens, before a space if possible."""
        pieces: list[Piece] = []
        chars_per_token = (b - a) / max(1, self._exact(a, b))
        pos = a
        while pos < b:
            cut = min(b, pos + max(1, int(self.room * chars_per_token * 0.9)))
            tokens = self.counter.count(self.text[pos:cut])
            while tokens > self.room and cut - pos > 1:
                cut = pos + max(1, int((cut - pos) * self.room / tokens * 0.95))
                tokens = self.counter.count(self.text[pos:cut])
            if cut < b:
                soft = self.text.rfind(" ", cut - int((cut - pos) * SOFT_CUT_WINDOW), cut)
                if soft > pos:
                    cut, tokens = soft, self.counter.count(self.text[pos:soft])
            pieces.append(Piece(pos, cut, tokens))
            chars_per_token = (cut - pos) / max(1, tokens)
            pos = cut
        return pieces

    def _strengths(self, lines: list[str]) -> list[float]:
        """Strength of a cut before each line (the first line and the end are no cut points)."""
        blank = [not line.strip() for line in lines]
        top = [line[:1] not in _NOT_TOP for line in lines]
        exact = [b in self.anchor_at for b in self.starts]
        out = [0.0]
        for k in range(1, len(lines)):
            strength = (TOP if top[k] else BLANK) if blank[k - 1] else LINE
            out.append(strength + EXACT_BONUS if exact[k] else strength)
        out.append(0.0)
        return out


class _Exact:
    """Exact token counts of slices of one text, from what is known where possible.

    Marks and anchors inside a region are safe cuts (`is_safe_cut`): where counts add up
    exactly there (tiktoken), a slice is counted only beyond the known points nearest its ends,
    not whole again (the same number, from a fraction of the text), and the safe ends of the
    slices counted become known points too.
    """

    def __init__(
        self,
        text: str,
        counter: TokenCounter,
        anchors: Sequence[tuple[int, int]],
        marks: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.text, self.counter = text, counter
        self._anchors = dict(anchors)
        self._marks = marks
        known = marks if marks and sums_exactly(counter) else ()
        self._at = dict(known or anchors)
        self._offsets = [offset for offset, _ in (known or anchors)]
        self._sums = sums_exactly(counter)

    def within(self, anchors: Sequence[tuple[int, int]]) -> _Exact:
        """The same text and marks, for a region with these anchors."""
        return _Exact(self.text, self.counter, anchors, self._marks)

    def count(self, a: int, b: int) -> int:
        """Tokens of text[a:b]; where counts add up, its end is known from then on when it is a
        safe cut after a known point (the next piece starts there)."""
        known = self._anchors
        if a in known and b in known:
            return known[b] - known[a]
        if not self._sums:
            return self.counter.count(self.text[a:b])
        first = bisect.bisect_left(self._offsets, a)
        last = bisect.bisect_right(self._offsets, b) - 1
        if first < last:  # known points inside: count only the text beyond them
            p, q = self._offsets[first], self._offsets[last]
            head = self.counter.count(self.text[a:p]) if a < p else 0
            tail = self.counter.count(self.text[q:b]) if q < b else 0
            tokens = head + self._at[q] - self._at[p] + tail
        else:
            tokens = self.counter.count(self.text[a:b])
        if a in self._at and b not in self._at and is_safe_cut(self.text, b):
            self._at[b] = self._at[a] + tokens
            bisect.insort(self._offsets, b)
        return tokens


def _interpolated(bounds: list[int], anchors: list[tuple[int, int]]) -> list[float]:
    """Tokens before each offset: exact at anchors, linear by characters in between."""
    out: list[float] = []
    k = 0
    for (a, ta), (b, tb) in itertools.pairwise(anchors):
        rate = (tb - ta) / (b - a) if b > a else 0.0
        j = bisect.bisect_right(bounds, b, lo=k)
        out.extend(ta + (x - a) * rate for x in bounds[k:j])
        k = j
    out.extend(float(anchors[-1][1]) for _ in bounds[k:])
    return out


def _anchors(
    start: int, end: int, segments: Sequence[tuple[int, int]], tokens: int
) -> list[tuple[int, int]]:
    """(offset, tokens since start) where the count is exact: the ends, and segment ends.

    Segments are used only when the region is the whole text they were counted for.
    """
    anchors = [(start, 0)]
    if segments and start == 0 and segments[-1][0] == end:
        running = 0
        for offset, count in segments:
            running += count
            anchors.append((offset, running))
    else:
        anchors.append((end, tokens))
    return anchors
