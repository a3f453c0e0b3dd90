"""A plan's request sizes from the counts it already made, so that each text is counted once.

A dry run estimates every request's prompt tokens. The chunks' texts were counted while the
input was read (on all cores), so a request's count is the known counts of its chunk's parts plus
the text around them (the template, the frames, the system prompt), counted here and remembered
by their exact text. Where a counter's counts add up across a cut (tiktoken and the byte bound,
at `is_safe_cut` line starts) that is exact: the same number as counting the whole prompt again.
A part whose edges are not safe cuts (a first line that starts with "/" or is blank, a last line
without its newline, an escaped mid-line start) is counted with the text around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..inputs.tokens import MESSAGE_TOKENS, REPLY_TOKENS, TokenCounter, is_safe_cut
from ..records import Task
from .chunking import FOOTER, JOIN, Chunk

#: Texts around the chunks up to this long are counted once per run and remembered (the system
#: prompt and the template repeat in every request); longer ones are counted where they occur.
MEMO_CHARS = 64 * 1024

#: (start, end, tokens): a span of a message whose count is known.
Span = tuple[int, int, int]


def adds_up(counter: TokenCounter) -> bool:
    """Whether counts of texts cut at safe line starts add up exactly to the whole's."""
    return counter.exact and counter.additive and counter.render is None


def planned_request_tokens(
    tasks: Sequence[Task], chunks: Sequence[Chunk], counter: TokenCounter
) -> list[int] | None:
    """Each task's tokens as `counter.request_tokens(task.request.messages)` counts them, made
    from the plan's counts of its parts; None when the counter's counts do not add up.

    Tasks are chunk-major within each aspect and clone (`section_tasks`), so task k works on
    chunk k mod len(chunks); every span is checked against the message before it is used, so a
    task that is not where it is expected is only counted more slowly, never wrongly.
    """
    if not adds_up(counter) or not chunks:
        return None
    count = _memo(counter.count)
    out = []
    for k, task in enumerate(tasks):
        chunk = chunks[k % len(chunks)]
        total = REPLY_TOKENS
        for message in task.request.messages:
            content = str(message.get("content") or "")
            spans = _spans(content, chunk) if _is_user(message) else []
            total += count_spanned(content, spans, count) + MESSAGE_TOKENS
        out.append(total)
    return out


def count_spanned(text: str, spans: Sequence[Span], count: Callable[[str], int]) -> int:
    """Tokens of `text`, with the known spans' counts used wherever both edges are safe cuts
    and the rest counted."""
    total = pos = 0
    for start, end, tokens in spans:
        if start < pos or not (_safe(text, start) and _safe(text, end)):
            continue
        total += count(text[pos:start]) + tokens
        pos = end
    return total + count(text[pos:])


def _spans(content: str, chunk: Chunk) -> list[Span]:
    """Where the chunk's parts' texts are in a user message (none when it does not hold the
    chunk): the frames are laid out as `Chunk.text` lays them out, from the first one found."""
    if not chunk.parts:
        return []
    pos = content.find(chunk.parts[0].header())
    if pos < 0:
        return []
    spans = []
    for part in chunk.parts:
        start = pos + len(part.header())
        text = part.text
        if not part.lead and text and content.startswith(text, start):  # else: not as counted
            spans.append((start, start + len(text), part.tokens))
        pos = start + len(part.body()) + len(FOOTER) + len(JOIN)
    return spans


def _safe(text: str, offset: int) -> bool:
    return offset == 0 or offset == len(text) or is_safe_cut(text, offset)


def _is_user(message: Mapping[str, Any]) -> bool:
    return message.get("role") == "user"


def _memo(count: Callable[[str], int]) -> Callable[[str], int]:
    """`count`, remembering the counts of short texts by their exact text."""
    known: dict[str, int] = {"": 0}

    def remembered(text: str) -> int:
        if len(text) > MEMO_CHARS:
            return count(text)
        found = known.get(text)
        if found is None:
            found = known[text] = count(text)
        return found

    return remembered
