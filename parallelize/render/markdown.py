"""The small text rules every rendering shares: Markdown escaping and fences, dollars, plurals.

One place, so the step summary, the Markdown report and the terminal summary agree: the same
text is escaped the same way (the strictest rule: no markup, no HTML, no @mention, no link), a
fence is always longer than what it holds, and an amount or a count reads the same everywhere.
"""

from __future__ import annotations

import re

_MD_SPECIAL = re.compile(r"[\\`*_{}\[\]()#+!|~$<>&@]")
#: HTML's characters as entities; `@` gets a word joiner so that nobody is mentioned.
_MD_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "@": "@\u2060"}
_BACKTICKS = re.compile(r"`+")


def escape(line: str) -> str:
    """One line of text shown literally in Markdown: no markup, no HTML, no @mention, no link.

    The caller makes it one line first (a table cell or a list item cannot hold a newline)."""
    return _MD_SPECIAL.sub(lambda m: _MD_ENTITIES.get(m[0], "\\" + m[0]), line)


def fence(text: str, language: str = "") -> str:
    """A fenced code block, ending with a newline, whose fence no run of backticks in `text` can
    close (nothing inside renders)."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    ticks = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{ticks}{language}\n{body}{ticks}\n"


def usd(amount: float | None) -> str:
    """Dollars with the precision small amounts need (`$12.30`, `$0.0042`); `unpriced` for None."""
    if amount is None:
        return "unpriced"
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def shows_usd(amount: float | None) -> bool:
    """Whether an amount is worth a mention: it does not round to `$0.0000`."""
    return amount is not None and round(amount, 4) > 0


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 chunk`, `2 chunks`, `1,200 calls`, `3 retries`: the count with its noun in agreement."""
    return f"{count:,} {noun if count == 1 else many or noun + 's'}"
