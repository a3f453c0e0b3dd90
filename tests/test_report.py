"""Reports (`--report FILE.html|.md`, `parallelize report RUN.json`): what they show, that model
text cannot break out of them, that they load nothing and never show the key, and the errors.

Real runs against the loopback server; the pages are checked as text (tests/browser/ checks them
in a real browser).
"""

from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner
from votehelp import TASK, candidates, judge_says

from parallelize.cli.app import app
from parallelize.render.report import md_escape, md_fence

KEY = "sk-test-loopback-key-0000"  # the llm fixture's OPENAI_API_KEY
HOSTILE = (
    '<script>alert(1)</script> "><img src=x onerror=alert(2)> {{ 7*7 }} {% if 1 %}IF{% endif %} '
    "\x1b[31mRED\x1b[0m \x1b]8;;http://evil.example/\x07link\x1b]8;;\x07 [x](http://evil.example) "
    f"![i](https://evil.example/i.png) @octocat | pipe | `tick` $x$ key={KEY}"
)
#: Tags the report itself writes into Markdown (everything else must come out escaped).
MD_TAGS = {"details", "/details", "summary", "/summary", "sub", "/sub"}


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def project(make_tree) -> Path:
    files = {f"pkg/mod{i}.py": f"def f{i}():\n    return 'MARKER-{i}'\n" for i in range(3)}
    return make_tree(files, name="proj")


def section_run(cli: CliRunner, tmp_path: Path, root: Path, *extra: str) -> tuple[Path, Path]:
    """A section run writing its JSON document and its HTML and Markdown reports."""
    run, page = tmp_path / "run.json", tmp_path / "report.html"
    args = ["section", str(root), "--by", "file", "-p", "Sum up {{ input }}", "-m", "test-model"]
    result = cli.invoke(app, [*args, "--format", "json", "-o", str(run), "--report", str(page)])
    assert result.exit_code in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    return run, page


class Tags(HTMLParser):
    """Every start tag of a page with its attributes (what a browser would act on)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(page)
    return parser.tags


def assert_loads_nothing(page: str) -> None:
    """No element that fetches, no URL in an attribute or in CSS, and a CSP that forbids it."""
    tags = tags_of(page)
    names = {tag for tag, _ in tags}
    assert not names & {"script", "img", "link", "iframe", "object", "embed", "base", "form"}
    for tag, attrs in tags:
        for name, value in attrs.items():
            assert name not in ("src", "href", "srcset", "action", "poster", "data"), (tag, name)
            assert name.startswith("on") is False, (tag, name)
            assert not re.search(r"https?:|url\(", value or "", re.I), (tag, name, value)
    assert not re.search(r"url\(|@import|https?://", page.split("</style>")[0], re.I)
    assert "default-src 'none'" in page


# ---- what the reports show ----


def test_section_report_shows_chunks_files_tokens_outputs_and_timings(
    llm: LLMServer, cli: CliRunner, make_tree, tmp_path: Path
) -> None:
    llm.script("mod1.py", "SUMMARY OF ONE", finish_reason="length")
    run, page = section_run(cli, tmp_path, project(make_tree))
    doc = json.loads(run.read_text())
    html = page.read_text()
    assert [t["duration_s"] > 0 for t in doc["tasks"]] == [True] * 3  # timed real calls
    for task in doc["tasks"]:
        assert task["label"] in html and task["paths"][0] in html
        assert f">{task['tokens']:,}<" in html  # the chunk's token count in its row
    assert "MARKER-0" in html and "SUMMARY OF ONE" in html
    assert '<span class="pill truncated">truncated</span>' in html
    assert "<strong>1 call cut short</strong>" in html and "incomplete: chunk 2/3." in html
    assert "exit 0 · success" in html and "test-model" in html and "unpriced" in html
    assert re.search(r'<i style="width: [\d.]+%"></i></span><span class="t">\d+ ms<', html)  # bars
    assert "3 files" in html and "Inputs" in html and "Cost and engine" in html
    assert_loads_nothing(html)


def test_a_cache_hit_takes_no_time_and_says_cached(
    llm: LLMServer, cli: CliRunner, make_tree, tmp_path: Path
) -> None:
    root = project(make_tree)
    section_run(cli, tmp_path, root)
    run, page = section_run(cli, tmp_path, root)  # the same run again: every call cached
    doc = json.loads(run.read_text())
    assert [(t["cached"], t["duration_s"]) for t in doc["tasks"]] == [(True, 0.0)] * 3
    assert page.read_text().count('<span class="muted">cached</span>') == 3


def test_failures_are_listed_with_their_error(
    llm: LLMServer, cli: CliRunner, make_tree, tmp_path: Path
) -> None:
    llm.script("mod2.py", status=503)
    _, page = section_run(cli, tmp_path, project(make_tree))
    html = page.read_text()
    failed = re.search(r'<div class="callout bad" id="failures">(.*?)</div>', html, re.S)
    assert failed and "1 call failed" in failed[1] and "chunk 3/3" in failed[1]
    assert "HTTP 503" in failed[1] and "exit 1 · some or all work failed" in html


def test_vote_report_puts_candidates_side_by_side_and_marks_the_winner(
    llm: LLMServer, cli: CliRunner, tmp_path: Path
) -> None:
    judge_says(llm, '{"winner": "B", "reason": "the greenest of the three"}')
    candidates(llm, "alpha red", "bravo green", "charlie blue")
    page, md = tmp_path / "vote.html", tmp_path / "vote.md"
    args = ["vote", TASK, "-j", "1", "--seed", "4", "-q"]
    assert cli.invoke(app, [*args, "--report", str(page)]).exit_code == 0
    html = page.read_text()
    cards = re.findall(
        r'<article class="candidate([^"]*)" id="candidate-(\d)" data-winner="(\w+)"', html
    )
    assert cards == [(" winner", "1", "true"), ("", "2", "false"), ("", "3", "false")]
    assert html.count("★ winner") == 1 and "Winner: candidate #1" in html
    assert "the greenest of the three" in html and "Judge rounds" in html
    assert all(colour in html for colour in ("alpha red", "bravo green", "charlie blue"))
    assert re.search(r"agreement .*?<b>\d+%</b>", html) and "votes <b>1</b>" in html
    assert_loads_nothing(html)
    judge_says(llm, '{"winner": "B", "reason": "the greenest of the three"}')
    candidates(llm, "alpha red", "bravo green", "charlie blue")
    assert cli.invoke(app, [*args, "--no-cache", "--report", str(md)]).exit_code == 0
    text = md.read_text()
    assert "**★ Winner: candidate #1**: judge \\(test-model\\) chose \\#1" in text
    assert "| **★ 1** | test-model | 1 |" in text


def test_no_winner_says_so(llm: LLMServer, cli: CliRunner, tmp_path: Path) -> None:
    candidates(llm, "ANSWER: 4", "ANSWER: 5", "ANSWER: 6")
    page = tmp_path / "vote.html"
    args = ["vote", TASK, "-j", "1", "-s", "consensus", "--answer-pattern", r"ANSWER:\s*(\S+)"]
    result = cli.invoke(app, [*args, "-q", "--report", str(page)])
    assert result.exit_code == 3
    html = page.read_text()
    assert '<section class="verdict none" id="verdict">' in html and "No winner" in html
    assert 'data-winner="true"' not in html and html.count('<tr><td class="mono">') == 3


# ---- the same page either way ----


@pytest.mark.parametrize("suffix", [".html", ".md"])
def test_report_of_a_saved_run_equals_the_runs_own_report(
    llm: LLMServer, cli: CliRunner, make_tree, tmp_path: Path, suffix: str
) -> None:
    root = project(make_tree)
    run, page = tmp_path / "run.json", tmp_path / f"report{suffix}"
    args = ["section", str(root), "--by", "file", "-m", "test-model", "-q", "--no-cache"]
    result = cli.invoke(app, [*args, "--format", "json", "-o", str(run), "--report", str(page)])
    assert result.exit_code == 0, result.stderr
    again = tmp_path / f"again{suffix}"
    result = cli.invoke(app, ["report", str(run), "-o", str(again)])
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    assert again.read_text() == page.read_text()
    flag = ["--markdown"] if suffix == ".md" else []
    piped = cli.invoke(app, ["report", "-", *flag], input=run.read_text())
    assert piped.exit_code == 0 and piped.stdout == page.read_text()


# ---- hostile model text ----


def test_hostile_model_text_is_shown_not_run(
    llm: LLMServer, cli: CliRunner, make_tree, tmp_path: Path
) -> None:
    llm.script(None, HOSTILE)
    run, page = section_run(cli, tmp_path, project(make_tree))
    html = page.read_text()
    assert_loads_nothing(html)
    assert "<script" not in html and "<img" not in html and "onerror=alert" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "{{ 7*7 }} {% if 1 %}IF{% endif %}" in html  # shown as text, never rendered
    assert "\x1b" not in html and "RED" in html and "link" in html
    assert KEY not in html and "[REDACTED:api-key]" in html
    assert KEY not in run.read_text()


def test_hostile_model_text_in_markdown_stays_text(
    llm: LLMServer, cli: CliRunner, tmp_path: Path
) -> None:
    candidates(llm, HOSTILE, HOSTILE + " again", "plain")
    judge_says(llm, json.dumps({"winner": "A", "reason": HOSTILE}))
    page = tmp_path / "vote.md"
    result = cli.invoke(app, ["vote", TASK, "-j", "1", "--seed", "4", "-q", "--report", str(page)])
    assert result.exit_code == 0, result.stderr
    md = page.read_text()
    assert KEY not in md and "\x1b" not in md
    outside = re.sub(r"^(`{3,})text\n.*?^\1$", "", md, flags=re.S | re.M)  # the code blocks
    assert "alert" in outside  # the judge's reason is outside a code block ...
    tags = {m.lower() for m in re.findall(r"<(/?[a-zA-Z]+)", outside)}
    assert tags <= MD_TAGS  # ... and no tag of its came through
    assert "@octocat" not in outside and "@\u2060octocat" in outside  # nobody is mentioned
    assert "](http" not in outside.replace("\\](http", "")  # no link or image
    assert "{{ 7\\*7 }}" not in outside and "\\{\\{ 7\\*7 \\}\\}" in outside
    assert "\\| pipe \\|" in outside  # the table keeps its columns


def test_markdown_escaping_and_fences() -> None:
    assert md_escape("a <b> & *c* [d](e) | f @g\nh") == (
        "a &lt;b&gt; &amp; \\*c\\* \\[d\\]\\(e\\) \\| f @\u2060g h"
    )
    fenced = md_fence("x ```` y")
    assert fenced.startswith("`````text\n") and fenced.endswith("\n`````")
    assert md_fence("z" * 50, 10).count("z") == 10 and "40 more characters" in md_fence(
        "z" * 50, 10
    )


def test_report_command_masks_the_key_of_its_own_environment(
    tmp_path: Path, entry_point: str
) -> None:
    """A document saved by hand (or by an older version) still shows no key."""
    secret = "sk-handmade-secret-0123456789"
    doc = {
        "schema_version": 1,
        "command": "vote",
        "exit_code": 0,
        "result": f"the key is {secret}",
        "tasks": [{"label": "candidate 1/1", "status": "ok", "output": f"key {secret}"}],
        "candidates": [{"index": 0, "winner": True, "text": f"key {secret}"}],
        "winner": 0,
    }
    (tmp_path / "run.json").write_text(json.dumps(doc))
    env = {"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": secret, "HOME": str(tmp_path)}
    for flag in ([], ["--markdown"]):
        run = subprocess.run(
            [entry_point, "report", "run.json", *flag],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert secret not in run.stdout and "[REDACTED:api-key]" in run.stdout


# ---- errors: exit 2 with one line ----


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(n in lines[0] for n in needles), lines[0]


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (None, ("RUN missing.json: cannot read it",)),
        ("not json {", ("not JSON (line 1)", "--format json")),
        ("[1, 2]", ("not a parallelize run document", "not an object")),
        ('{"command": "section"}', ("has no 'schema_version'",)),
        ('{"schema_version": 2, "command": "vote", "tasks": []}', ("schema_version 2",)),
        ('{"schema_version": "1", "command": "vote", "tasks": []}', ("is not a whole number",)),
        ('{"schema_version": 1, "command": "cache", "tasks": []}', ("command 'cache'",)),
        ('{"schema_version": 1, "command": "vote"}', ("has no 'tasks'",)),
        ('{"schema_version": 1, "command": "vote", "tasks": [3]}', ("tasks[0] is not an object",)),
        (
            '{"schema_version": 1, "command": "section", "dry_run": true, "tasks": []}',
            ("a dry run's plan",),
        ),
        (
            '{"schema_version": 1, "command": "section", "tasks": [{"usage": {"prompt_tokens": '
            '"x"}}]}',
            ("tasks[0].usage.prompt_tokens is not a whole number",),
        ),
    ],
)
def test_report_of_a_bad_document_is_exit_2(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content, needles
) -> None:
    monkeypatch.chdir(tmp_path)
    name = "missing.json"
    if content is not None:
        name = "run.json"
        (tmp_path / name).write_text(content)
    one_line_error(cli.invoke(app, ["report", name, "-o", "out.html"]), *needles)
    assert not (tmp_path / "out.html").exists()


def test_report_options_are_checked_before_any_call(
    llm: LLMServer, cli: CliRunner, make_tree, tmp_path: Path
) -> None:
    root = str(project(make_tree))
    section = ["section", root, "-m", "test-model"]
    one_line_error(cli.invoke(app, [*section, "--report", "r.pdf"]), "--report r.pdf", ".html")
    one_line_error(cli.invoke(app, ["vote", TASK, "--report", "r.txt"]), "--report r.txt")
    one_line_error(cli.invoke(app, [*section, "--dry-run", "--report", "r.html"]), "dry run")
    assert llm.requests == []
    run = tmp_path / "run.json"
    run.write_text("{}")
    one_line_error(cli.invoke(app, ["report", str(run), "-o", "x.txt"]), "--output x.txt")
    one_line_error(cli.invoke(app, ["report", str(run), "-o", "x.md", "--markdown"]), "--markdown")


def test_an_unwritable_report_is_exit_2_after_the_run(
    llm: LLMServer, cli: CliRunner, make_tree, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["section", str(project(make_tree)), "-m", "test-model", "-q"]
    result = cli.invoke(app, [*args, "--report", str(blocker / "r.html")])
    one_line_error(result, "--report", "cannot write")
    assert "MARKER-0" in result.stdout  # the run's own result was written first


def test_jinja_stays_out_of_runs_without_a_report(
    llm: LLMServer, make_tree, tmp_path: Path
) -> None:
    from test_startup import loaded

    args = ["section", str(project(make_tree)), "--by", "file", "-p", "Sum up", "-m", "test-model"]
    _, without = loaded(args, ("jinja2",))
    _, with_report = loaded([*args, "--report", str(tmp_path / "r.html")], ("jinja2",))
    assert without == [] and with_report == ["jinja2"]
