"""The reports in a real browser (Debian's headless chromium): what it builds from them, what it
requests, and the screenshots the README shows (docs/screenshots/).

Opt-in: `make test-browser` (not part of `make test`; pyproject ignores this folder). The runs are
real: the installed entry point against the loopback server (tests/llmserver.py), scripted to
answer like a model would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from chromium import INSTALL_HINT, dump_dom, find_chromium, page_requests, screenshot
from llmserver import LLMServer, prompt_text

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
JUDGE = "impartial judge"


@pytest.fixture(autouse=True)
def _chromium() -> None:
    """A missing browser fails these tests (they were asked for), never skips them."""
    if find_chromium() is None:
        pytest.fail(f"chromium not found: {INSTALL_HINT}")


SHOP = {
    "shop/cart.py": "class Cart:\n    def add(self, sku, qty=1): ...\n    def total(self): ...\n",
    "shop/pricing.py": "def discount(total, code):\n    return total * RATES.get(code, 1)\n",
    "shop/inventory.py": "def reserve(sku, qty):\n    STOCK[sku] -= qty\n",
    "shop/api.py": "@route('/checkout')\ndef checkout(request): ...\n",
    "README.md": "# Shop\n\nA tiny web shop: cart, pricing, inventory and a checkout API.\n",
}
SUMMARIES = {
    "cart.py": "**shop/cart.py**\n- `Cart.add(sku, qty=1)` adds items\n"
    "- `Cart.total()` sums the lines",
    "pricing.py": "**shop/pricing.py**\n- `discount(total, code)` applies a rate from `RATES`\n"
    "- unknown codes fall back to no discount",
    "inventory.py": "**shop/inventory.py**\n- `reserve(sku, qty)` takes stock from `STOCK`\n"
    "- no check for negative stock",
    "api.py": "**shop/api.py**\n- `checkout(request)` serves `/checkout`",
    "README.md": "**README.md**\n- a tiny web shop: cart, pricing, inventory, checkout API",
}
MERGED = """## Shop: what each part does

- **shop/cart.py**: `Cart.add(sku, qty=1)` adds items; `Cart.total()` sums the lines.
- **shop/pricing.py**: `discount(total, code)` applies a rate from `RATES`; unknown codes get none.
- **shop/inventory.py**: `reserve(sku, qty)` takes stock from `STOCK` (no check for negative stock).
- **shop/api.py**: `checkout(request)` serves `/checkout`.
- **README.md**: a tiny web shop with a cart, pricing, inventory and a checkout API.
"""
NAMES = [
    "fanout: short, says what it does (one prompt fanned out to many workers).",
    "parallelize: plain and searchable; a little long to type, but nobody will wonder what it "
    "does.\n\nAlternatives considered: pllm, swarm.",
    "hydra: memorable, many heads working at once; but it says nothing about LLMs or merging.",
]
REASONS = {
    "parallelize": "clearest about what the tool does, and easy to find",
    "fanout": "short and accurate, but fan-out is only half of the pattern",
}
#: Tags and attributes through which a page would fetch something.
FETCHING_TAGS = {"script", "img", "link", "iframe", "object", "embed", "base", "video", "audio"}


class Dom(HTMLParser):
    """The elements of a DOM dump: (tag, attributes), and the text inside each id'd element."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self._open: list[tuple[str, str | None]] = []
        self.text: dict[str, str] = {}
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.elements.append((tag, found))
        if tag not in ("br", "meta", "input", "hr", "col", "wbr"):
            self._open.append((tag, found.get("id")))
            if found.get("id"):
                self.text.setdefault(found["id"], "")

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, ident in self._open:
            if ident:
                self.text[ident] += data

    def by(self, **attrs: str) -> list[dict[str, str]]:
        return [a for _, a in self.elements if all(a.get(k) == v for k, v in attrs.items())]


def assert_fetches_nothing(dom: Dom, requests: list[str], page: Path) -> None:
    """The browser asked for the page and nothing else; no element or style names a URL."""
    assert page_requests(requests) == [f"GET /{page.name}"], requests
    assert not {tag for tag, _ in dom.elements} & FETCHING_TAGS
    for tag, attrs in dom.elements:
        for name, value in attrs.items():
            assert name not in ("src", "href", "srcset", "poster", "action"), (tag, name, value)
            assert not re.search(r"(https?|ftp|file):|//|url\(", value, re.I), (tag, name, value)


def parallelize(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed entry point, in the test's environment (the loopback server's URL)."""
    script = Path(sys.executable).with_name("parallelize")
    return subprocess.run(
        [str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def summary_reply(body: dict) -> str:
    prompt = prompt_text(body)
    return next((text for name, text in SUMMARIES.items() if name in prompt), "nothing to say")


def judge_reply(body: dict) -> str:
    """Pick 'parallelize', except in one round of three (a split vote), with a reason."""
    prompt = prompt_text(body)
    judge_reply.rounds = getattr(judge_reply, "rounds", 0) + 1  # type: ignore[attr-defined]
    wanted = "fanout" if judge_reply.rounds == 2 else "parallelize"  # type: ignore[attr-defined]
    shown = re.findall(r'<candidate label="([A-Z]+)">\n(.*?)\n</candidate>', prompt, re.S)
    label = next(label for label, text in shown if text.startswith(wanted))
    return json.dumps({"winner": label, "reason": REASONS[wanted]})


@pytest.fixture
def shop(make_tree) -> Path:
    return make_tree(SHOP, name="work")


def test_section_report(llm: LLMServer, shop: Path, tmp_path: Path) -> None:
    llm.models.append("gpt-4o-mini")
    llm.latency, llm.jitter, llm.seed = 0.3, 0.25, 7  # varied timings for the bars
    llm.script("consecutive sections", MERGED)
    llm.script("inventory.py", summary_reply, finish_reason="length")
    llm.script(None, summary_reply)
    page = tmp_path / "section.html"
    run = parallelize(
        *("section", ".", "--by", "file", "--merge", "llm", "-m", "gpt-4o-mini"),
        *("--price-in", "0.15", "--price-out", "0.6", "-q", "--report", str(page)),
        *("--format", "json", "-o", str(tmp_path / "run.json")),
        cwd=shop,
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    dom_text, requests = dump_dom(page)
    dom = Dom(dom_text)
    assert_fetches_nothing(dom, requests, page)
    rows = [a for tag, a in dom.elements if tag == "details" and "row" in a.get("class", "")]
    assert len(rows) == len(doc["tasks"]) + len(doc["aggregate_calls"]) == 6
    for index, task in enumerate(doc["tasks"], 1):
        text = dom.text[f"chunk-{index}"]
        assert task["label"] in text and task["paths"][0] in text and f"{task['tokens']:,}" in text
    cut = [t for t in doc["tasks"] if t["status"] == "truncated"]
    assert [t["paths"] for t in cut] == [["shop/inventory.py"]]
    assert "truncated" in dom.text[f"chunk-{cut[0]['index'] + 1}"]
    assert "Shop: what each part does" in dom.text["result"]
    assert dom.text["exit-status"] == "exit 0 · success"
    shot = SCREENSHOTS / "section-report.png"
    assert page_requests(screenshot(page, shot, height=1560)) == [f"GET /{page.name}"]
    assert shot.stat().st_size < 400_000


def test_vote_report(llm: LLMServer, tmp_path: Path) -> None:
    llm.models.append("gpt-4o-mini")
    judge_reply.rounds = 0  # type: ignore[attr-defined]
    llm.latency, llm.jitter, llm.seed = 0.2, 0.6, 3
    llm.script(JUDGE, judge_reply)
    for text in NAMES:
        llm.script(lambda body: JUDGE not in prompt_text(body), text, times=1)
    page = tmp_path / "vote.html"
    task = (
        "Suggest a name for a CLI that runs the same LLM call in parallel and merges the results."
    )
    run = parallelize(
        *("vote", task, "-j", "1", "--judge-rounds", "3", "--seed", "5", "-m", "gpt-4o-mini"),
        *("--price-in", "0.15", "--price-out", "0.6", "-q", "--report", str(page)),
        *("--format", "json", "-o", str(tmp_path / "run.json")),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    dom_text, requests = dump_dom(page)
    dom = Dom(dom_text)
    assert_fetches_nothing(dom, requests, page)
    winners = dom.by(**{"data-winner": "true"})
    assert [w["id"] for w in winners] == [f"candidate-{doc['winner'] + 1}"] == ["candidate-2"]
    assert "winner" in winners[0]["class"].split()
    assert "★ winner" in dom.text["candidate-2"] and "votes 2" in dom.text["candidate-2"]
    assert "★ winner" not in dom.text["candidate-1"] + dom.text["candidate-3"]
    assert "Winner: candidate #2" in dom.text["verdict"] and "67%" in dom.text["verdict"]
    assert REASONS["fanout"] in dom.text["rounds"] and REASONS["parallelize"] in dom.text["rounds"]
    for name, dark in (("vote-report.png", False), ("vote-report-dark.png", True)):
        shot = SCREENSHOTS / name
        assert page_requests(screenshot(page, shot, height=1180, dark=dark)) == [
            f"GET /{page.name}"
        ]
        assert shot.stat().st_size < 400_000


def test_hostile_model_text_builds_no_element(llm: LLMServer, shop: Path, tmp_path: Path) -> None:
    hostile = (
        '<script>document.title="pwned"</script><img src="http://x.example/i.png" onerror="x()">'
        '<link rel="stylesheet" href="https://fonts.example.com/a.css"></pre><style>body{'
        "background:url(http://bg.example.com/b.png)}</style> {{ 7*7 }} \x1b[31mred\x1b[0m"
    )
    llm.script(None, hostile)
    page = tmp_path / "hostile.html"
    run = parallelize(*("section", ".", "--by", "file", "-m", "test-model"), "-q",
                      "--report", str(page), cwd=shop)  # fmt: skip
    assert run.returncode == 0, run.stderr
    dom_text, requests = dump_dom(page)
    dom = Dom(dom_text)
    assert_fetches_nothing(dom, requests, page)
    assert [tag for tag, _ in dom.elements].count("style") == 1  # the report's own
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom_text, re.S)[1]
    assert '<script>document.title="pwned"</script>' in dom.text["chunk-1"]  # shown as text


def test_the_check_sees_a_page_that_fetches(tmp_path: Path) -> None:
    """The control: a page with external assets is caught, by the proxy and in the DOM."""
    page = tmp_path / "control.html"
    page.write_text(
        '<!doctype html><link rel="stylesheet" href="https://fonts.example.com/f.css">'
        '<img src="http://images.example.com/x.png"><p style="background: url(//bg.example)">x'
    )
    dom_text, requests = dump_dom(page)
    fetched = " ".join(page_requests(requests))
    assert "fonts.example.com" in fetched and "images.example.com" in fetched
    with pytest.raises(AssertionError):
        assert_fetches_nothing(Dom(dom_text), requests, page)
