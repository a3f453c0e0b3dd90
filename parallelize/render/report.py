"""The report of a finished run: a self-contained HTML page, or Markdown for a pull-request comment.

Built with Jinja2 from the run's `--format json` document (document.py's envelope) read into typed
records by reportview, so `--report` and `parallelize report RUN.json` give the same page. HTML
autoescapes every value; Markdown escapes every value through the environment's `finalize` unless
a filter made it safe on purpose (a code fence, an HTML-escaped summary line). The page loads
nothing: inline CSS, no script, and a Content-Security-Policy that refuses every request.
"""

from __future__ import annotations

import functools
import html
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from .. import __version__
from ..errors import InputError
from ..inputs.read import format_bytes
from ..masking import mask
from ..merge.files import write_atomic
from ..records import RunResult
from .document import envelope
from .markdown import escape, fence, plural, usd
from .reportview import FLAVOURS, Run, read_run

#: Largest run document `parallelize report` reads (a 60-chunk run's is a few MB).
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024

#: Markdown is for a pull-request comment (GitHub takes up to 65,536 characters): the merged
#: result keeps up to MD_RESULT_LIMIT characters, and the outputs share MD_OUTPUTS_BUDGET, each
#: between MD_OUTPUT_MIN and MD_OUTPUT_MAX; the HTML report keeps them whole.
MD_RESULT_LIMIT = 12_000
MD_OUTPUTS_BUDGET = 30_000
MD_OUTPUT_MIN, MD_OUTPUT_MAX = 300, 2_000


def flavour_of(path: Path, *, flag: str) -> str:
    """`html` or `md` from the file's suffix; an InputError naming `flag` for any other."""
    flavour = FLAVOURS.get(path.suffix.lower())
    if flavour is None:
        raise InputError(f"{flag} {path}: name the file .html for a web page or .md for Markdown")
    return flavour


def render_report(doc: Mapping[str, Any] | object, *, flavour: str, source: str) -> str:
    """The page (HTML or Markdown) for a run document, masked."""
    run = read_run(doc, source=source)
    template = _environment(flavour).get_template(f"report.{flavour}.j2")
    page = template.render(
        run=run, version=__version__, md_limit=_md_limit(run), md_result_limit=MD_RESULT_LIMIT
    )
    return mask(page)


def write_report(result: RunResult, path: Path) -> None:
    """Write the report of a finished run (`--report FILE`), made from its JSON document."""
    # Through JSON and back: the very document `--format json` writes, so that
    # `parallelize report RUN.json` renders the same page from the saved one.
    doc = json.loads(json.dumps(envelope(result), ensure_ascii=False, default=str))
    page = render_report(doc, flavour=flavour_of(path, flag="--report"), source="the run")
    _write(page, path, flag="--report")


def report_file(source: str, *, output: Path | None, markdown: bool) -> None:
    """`parallelize report RUN.json`: a saved document's report, to a file or to stdout."""
    flavour = "md" if markdown else "html"
    if output is not None:
        flavour = flavour_of(output, flag="--output")
    page = render_report(load_document(source), flavour=flavour, source=source)
    if output is None:
        sys.stdout.write(page)
        sys.stdout.flush()
    else:
        _write(page, output, flag="--output")


def load_document(source: str) -> object:
    """A saved `--format json` document from a file, or stdin for `-`."""
    name = "stdin" if source == "-" else source
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1)
        else:
            with open(source, "rb") as handle:
                data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise InputError(f"RUN {name}: cannot read it ({exc.strerror})") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        limit = MAX_DOCUMENT_BYTES // (1024 * 1024)
        raise InputError(f"RUN {name}: larger than {limit} MiB; is it a run's --format json?")
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputError(
            f"RUN {name}: not JSON{where}; give the output of a run with --format json"
        ) from None


def _write(page: str, path: Path, *, flag: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, page)
    except OSError as exc:
        raise InputError(f"{flag} {path}: cannot write ({exc.strerror})") from None


def _md_limit(run: Run) -> int:
    """Characters kept of each output in the Markdown flavour (they share one budget)."""
    outputs = len(run.tasks) + len(run.aggregate)
    return max(MD_OUTPUT_MIN, min(MD_OUTPUT_MAX, MD_OUTPUTS_BUDGET // max(1, outputs)))


# ---- Jinja ----


@functools.cache
def _environment(flavour: str) -> jinja2.Environment:
    """The template environment of a flavour: HTML autoescapes, Markdown escapes in finalize."""
    loader = jinja2.PackageLoader("parallelize.render", "templates")
    common: dict[str, Any] = {
        "loader": loader,
        "undefined": jinja2.StrictUndefined,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "keep_trailing_newline": True,
    }
    if flavour == "html":
        env = jinja2.Environment(autoescape=True, **common)
    else:
        env = jinja2.Environment(autoescape=False, finalize=_md_finalize, **common)
        env.filters |= {"fence": md_fence, "html": md_html, "cut": md_cut}
    env.filters |= {
        "seconds": format_seconds,
        "usd": usd,
        "num": format_number,
        "plural": plural,
        "size": format_bytes,
        "pct": format_percent,
        "oneline": oneline,
    }
    return env


class Safe(str):
    """Markdown a filter built on purpose (a fence, escaped HTML): `finalize` leaves it as is."""


def md_escape(text: str) -> str:
    """Inline text for Markdown: one line, no markup, no HTML, no @mention (a word joiner)."""
    return escape(oneline(text))


def _md_finalize(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, Safe) else md_escape(str(value))


def md_fence(text: str, limit: int | None = None) -> Safe:
    """A fenced code block longer than any run of backticks in the text (nothing inside renders)."""
    if limit is not None:
        text = md_cut(text, limit)
    return Safe(fence(text.rstrip(), "text").removesuffix("\n"))


def md_html(text: str) -> Safe:
    """Text for an HTML element of the Markdown (a <summary>): escaped, one line, no @mention."""
    return Safe(html.escape(oneline(text)).replace("@", "@\u2060"))


def md_cut(text: str, limit: int) -> str:
    """At most `limit` characters, saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text) - limit:,} more characters in the HTML report)"


def oneline(text: object, limit: int = 600) -> str:
    """Whitespace (newlines too) collapsed to single spaces, at most `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def format_seconds(value: float | None) -> str:
    """0.061 -> `61 ms`, 2.345 -> `2.35 s`, 75 -> `1 min 15 s`."""
    seconds = value or 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def format_number(value: float | None) -> str:
    """Thousands separated; whole floats without their `.0`."""
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def format_percent(share: float | None) -> str:
    """0.6667 -> `67%`."""
    return "–" if share is None else f"{100 * share:.0f}%"
