"""Counting many texts on a small thread pool, each once: in segments, with marks.

tiktoken's encoder releases the GIL, so texts are counted on COUNT_WORKERS threads while the
caller reads the next files. A long text is counted in segments cut at safe line starts
(`tokens.segment_offsets`), whose counts add up. Where they add up exactly (tiktoken), each
segment is counted in pieces of about MARK_CHARS cut the same way, and the count before every
such cut is kept (a mark): the splitter then counts a piece it cuts between marks only from the
nearest ones instead of whole again (12% of the standard library was counted twice without).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .tokens import BYTES_BOUND, TokenCounter, safe_cuts, segment_offsets, sums_exactly

#: Threads that count tokens while the caller reads: one core fewer than the machine has (the
#: caller counts too once it has read everything, see `Pending.help`), at most 4. On 2 cores,
#: 2 threads and the reader counted the standard library no faster than 1 and the reader, with
#: 40% more CPU time.
COUNT_WORKERS = max(1, min(4, (os.cpu_count() or 1) - 1))
#: Characters of text handed to a counting thread at once.
COUNT_BATCH_CHARS = 256 * 1024
#: A local counter counts texts shorter than this on the caller's thread: for a small file the
#: hand-off to a counting thread costs more than the count (1,000 small files: ~0.05 s less).
INLINE_COUNT_CHARS = 4096
#: About how far apart the marks of a text are (none in texts shorter than twice this).
MARK_CHARS = 2048

#: (offset, tokens before it): where a text's count is known exactly.
Marks = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Counted:
    """A text's tokens, its segments' (end offset, tokens) when it was counted in more than one,
    and its marks (with 0 and the end) when they were kept."""

    tokens: int
    segments: tuple[tuple[int, int], ...] = ()
    marks: Marks = ()


#: Per segment of a batch: its tokens, and the (offset, tokens since the segment's start) of
#: its inner marks.
_Counts = list[tuple[int, list[tuple[int, int]]]]
_Future = Future[_Counts]
#: One batch of a text's segments on the pool: their ends, its future, and its computation.
_Job = tuple[tuple[int, ...], _Future, Callable[[], _Counts]]


def count_pool() -> ThreadPoolExecutor:
    """The pool texts are counted on."""
    return ThreadPoolExecutor(COUNT_WORKERS, thread_name_prefix="parallelize-count")


class Pending:
    """A text's count on its way: the batches of its segments on the pool."""

    def __init__(self, jobs: list[_Job], *, marked: bool, done: Counted | None = None) -> None:
        self._jobs = jobs
        self._marked = marked
        self._done = done

    def help(self) -> None:
        """Count here the batches no pool thread has started: a caller about to wait for the
        counts keeps its core busy (so the pool needs one thread fewer than there are cores)."""
        for i, (ends, future, call) in enumerate(self._jobs):
            if future.cancel():
                done: _Future = Future()
                done.set_result(call())
                self._jobs[i] = (ends, done, call)

    def result(self) -> Counted:
        """The text's count, once its batches are done."""
        if self._done is not None:
            return self._done
        total, segments, marks = 0, [], [(0, 0)]
        for ends, future, _ in self._jobs:
            for end, (tokens, inner) in zip(ends, future.result(), strict=True):
                marks.extend((offset, total + before) for offset, before in inner)
                total += tokens
                segments.append((end, tokens))
                marks.append((end, total))
        kept = tuple(marks) if self._marked and len(marks) > 2 else ()
        return Counted(total, tuple(segments) if len(segments) > 1 else (), kept)


def submit(pool: ThreadPoolExecutor, counter: TokenCounter, text: str) -> Pending:
    """Start counting a text's segments, in batches of about COUNT_BATCH_CHARS."""
    marked = _marks_wanted(counter, text)
    if counter.additive and len(text) < INLINE_COUNT_CHARS:  # local and small: no hand-off
        return Pending([], marked=False, done=Counted(counter.count(text)))
    ends = segment_offsets(text) if counter.additive else [len(text)]
    jobs: list[_Job] = []
    start, batch = 0, []
    for end in ends:
        batch.append(end)
        if end - start >= COUNT_BATCH_CHARS or end == ends[-1]:
            call = functools.partial(_count_segments, counter, text, start, batch, marked)
            jobs.append((tuple(batch), pool.submit(call), call))
            start, batch = end, []
    return Pending(jobs, marked=marked)


def _marks_wanted(counter: TokenCounter, text: str) -> bool:
    """Marks pay where counts add up exactly and a text is long enough to be cut."""
    return counter is not BYTES_BOUND and sums_exactly(counter) and len(text) >= 2 * MARK_CHARS


def _count_segments(
    counter: TokenCounter, text: str, start: int, ends: list[int], marked: bool
) -> _Counts:
    """Per segment text[start:ends[0]], text[ends[0]:ends[1]], ...: its tokens and inner marks
    (on a pool thread)."""
    out = []
    for end in ends:
        inner: list[tuple[int, int]] = []
        tokens, pos = 0, start
        cuts = safe_cuts(text, start, end, MARK_CHARS) if marked else []
        for cut in [*cuts, end]:
            tokens += counter.count(text[pos:cut]) if cut > pos else 0
            if cut < end:
                inner.append((cut, tokens))
            pos = cut
        out.append((tokens, inner))
        start = end
    return out
