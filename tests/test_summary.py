"""A quiet summary: repeated per-task lines fold into one line with a count and the first few
names (`--verbose` names them all), a long server message is printed once, counts agree in
number."""

from __future__ import annotations

import re

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app
from parallelize.records import (
    ChatRequest,
    Completion,
    RunResult,
    SectionSource,
    Task,
    TaskResult,
    Usage,
)
from parallelize.render import fold, terminal
from parallelize.render.findings import NO_FINDINGS
from parallelize.render.fold import Fold, RepeatedErrors, error_key, listed
from parallelize.render.markdown import fence, plural, usd
from parallelize.render.report import _environment as report_environment
from parallelize.render.report import md_escape, md_fence
from parallelize.render.stepsummary import SUMMARY_LIMIT, cell, step_summary
from parallelize.render.terminal import engine_parts
from parallelize.reports import CostReport, EngineReport

FILES = 12
LONG_ERROR = "The request was rejected by the upstream policy service because " + "x" * 240


def tree(make_tree, n: int = FILES) -> str:
    return str(make_tree({f"f{i:02}.txt": f"MARKER-{i}-END\n" for i in range(n)}))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["section", *args, "-m", "test-model"])
    return result.exit_code, result.stdout, result.stderr


def summary_lines(stderr: str) -> list[str]:
    """The `summary:` line and the indented lines under it."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("summary: "))
    tail = lines[start + 1 :]
    return [lines[start], *[line for line in tail if line.startswith("  ")]]


@pytest.mark.parametrize("verbose", [False, True])
def test_every_chunk_truncated_is_one_line(llm: LLMServer, make_tree, verbose: bool) -> None:
    llm.script(None, finish_reason="length")
    flags = ["--verbose"] if verbose else []
    code, _, stderr = run(tree(make_tree), "--by", "file", "--max-tokens", "4", *flags)
    assert code == 0, stderr
    head, *folded = summary_lines(stderr)
    assert head.startswith(f"summary: {FILES} chunks, {FILES} calls") and "12 truncated" in head
    assert len(folded) == 1  # not one line per chunk
    names = ", ".join(f"chunk {i}/{FILES}" for i in range(1, FILES))
    if verbose:
        expected = f"{names} and chunk {FILES}/{FILES}"
    else:
        expected = f"chunk 1/{FILES}, chunk 2/{FILES}, chunk 3/{FILES} and {FILES - 3} more"
    assert folded[0] == (
        f"  {FILES} chunks truncated (finish_reason length): {expected}; raise max_tokens"
    )


def test_a_long_identical_error_is_shown_once_with_its_count(llm: LLMServer, make_tree) -> None:
    llm.script("MARKER-1-END", status=400, error={"message": "bad one", "type": "invalid_request"})
    llm.script("MARKER-", status=400, error={"message": LONG_ERROR, "type": "invalid_request"})
    code, stdout, stderr = run(tree(make_tree), "--by", "file", "-j", "2")
    assert code == 1 and stdout == ""
    head, *folded = summary_lines(stderr)
    assert head.endswith(f"{FILES} failed")
    assert folded[0].startswith(f"  {FILES - 1} chunks failed: chunk 1/{FILES}, chunk 3/{FILES}")
    assert folded[0].endswith(f"and {FILES - 4} more; HTTP 400: {LONG_ERROR}")
    assert folded[1] == f"  failed: chunk 2/{FILES}: HTTP 400: bad one"  # a lone one as before
    # Once in the summary, once in the progress log; the log's repeats point at the first.
    assert stderr.count(LONG_ERROR) == 2
    assert len(re.findall(r"^\[failed\] chunk \d+/12: \(same error as chunk", stderr, re.M)) == 10


def test_calls_not_started_fold_into_one_line(llm: LLMServer, make_tree) -> None:
    llm.script(None, status=400)
    args = ["--by", "file", "-j", "1", "--max-failures", "1", "--max-retries", "0"]
    code, _, stderr = run(tree(make_tree), *args)
    assert code == 1, stderr
    head, *folded = summary_lines(stderr)
    assert head.endswith("1 failed, 11 not started") and "1 call," in head
    assert folded[0].startswith(f"  failed: chunk 1/{FILES}: HTTP 400")
    assert folded[1] == (
        f"  11 chunks not started: chunk 2/{FILES}, chunk 3/{FILES}, chunk 4/{FILES} and 8 more; "
        "1 call failed (--max-failures)"
    )


def test_counts_agree_in_number(llm: LLMServer, make_tree) -> None:
    code, _, stderr = run(tree(make_tree, 1))
    assert code == 0, stderr
    assert re.search(r"^inputs: 1 file, ", stderr, re.M)
    assert re.search(r"^summary: 1 chunk, 1 call, ", stderr, re.M)
    code, _, stderr = run(tree(make_tree, 2), "--by", "file", "--no-cache")
    assert re.search(r"^inputs: 2 files, ", stderr, re.M)
    assert re.search(r"^summary: 2 chunks, 2 calls, ", stderr, re.M)


def test_folding_helpers() -> None:
    assert [plural(n, "chunk") for n in (0, 1, 2, 1200)] == [
        "0 chunks",
        "1 chunk",
        "2 chunks",
        "1,200 chunks",
    ]
    names = [f"c{i}" for i in range(1, 7)]
    assert listed(names[:1]) == "c1" and listed(names[:2]) == "c1 and c2"
    assert listed(names[:4]) == "c1, c2, c3 and c4"  # "and 1 more" says no less
    assert listed(names) == "c1, c2, c3 and 3 more"
    assert listed(names, verbose=True) == "c1, c2, c3, c4, c5 and c6"
    cut = Fold("chunk", "truncated (empty reply)", "", ("chunk 2/9",))
    assert cut.line() == "  truncated (empty reply): chunk 2/9"
    assert (
        error_key("HTTP 500: boom (request ID req_8f2c1A9e)") == "HTTP 500: boom (request ID req_*)"
    )
    assert error_key("budget: the last 21 attempts failed") == "budget: the last N attempts failed"
    assert error_key("job 3f2a9c0d1e2b4f5a6b7c8d9e failed") == "job <id> failed"
    assert error_key("HTTP 502: bad gateway") == "HTTP 502: bad gateway"  # a status stays
    repeated = RepeatedErrors()
    retried = "retry budget exhausted: the last {} attempts all failed; a re-run resumes them"
    assert repeated.shown("a", retried.format(20)) == retried.format(20)
    assert repeated.shown("b", retried.format(21)) == "(same error as a)"
    repeated = RepeatedErrors()
    long = "y" * 80
    assert repeated.shown("a", long) == long and repeated.shown("a", long) == long
    assert repeated.shown("b", long) == "(same error as a)"
    assert repeated.shown("b", "short") == "short" and repeated.shown("c", "short") == "short"


# ---- one set of text rules for the terminal, the step summary and the report -------------------


def chunk(index: int, total: int) -> Task:
    source = SectionSource(f"c{index}", (f"src/f{index}.py",), 10)
    request = ChatRequest("m", ({"role": "user", "content": "x"},))
    return Task(index, f"chunk {index + 1}/{total}", request, source)


def priced(*results: TaskResult, cost: CostReport) -> RunResult:
    engine = EngineReport(cost, 1, 0, 0, None, None, task_costs={0: 0.0, 1: 0.0, 2: 0.002})
    tasks = [r.task for r in results]
    return RunResult("section", "code-review", "m", tasks, results=list(results), engine=engine)


def test_a_saving_that_rounds_to_nothing_is_not_mentioned() -> None:
    done = TaskResult(chunk(0, 1), Completion("ok", "stop", Usage(10, 2), "m"), attempts=1)
    tiny = CostReport(0.5, 0.00001, None, (), prompt_cache_saved_usd=0.00004)
    assert engine_parts(priced(done, cost=tiny)) == ["cost $0.5000"]
    some = CostReport(0.5, 0.0002, None, (), prompt_cache_saved_usd=0.00005)
    assert engine_parts(priced(done, cost=some)) == [
        "cost $0.5000 (saved $0.0002, prompt cache saved $0.0001)"
    ]


def test_step_summary_rows_show_no_cost_for_calls_not_made_and_a_cached_run_says_so() -> None:
    failed = TaskResult(chunk(0, 3), error="HTTP 500: boom", attempts=1)
    unstarted = TaskResult(chunk(1, 3), error="not started: deadline", attempts=0)
    made = TaskResult(chunk(2, 3), Completion("ok", "stop", Usage(10, 2), "m"), attempts=1)
    page = step_summary(
        priced(failed, unstarted, made, cost=CostReport(0.002, 0, None, ())),
        NO_FINDINGS,
        SUMMARY_LIMIT,
    )
    rows = [line for line in page.splitlines() if re.match(r"^\| \d", line)]
    assert [row.rsplit("|", 2)[1].strip() for row in rows] == ["-", "-", "$0.0020"]
    hit = Completion("ok", "stop", Usage(10, 2), "m", cached=True)
    cached = [TaskResult(chunk(i, 2), hit) for i in range(2)]
    page = step_summary(
        priced(*cached, cost=CostReport(0, 0.001, None, ())), NO_FINDINGS, SUMMARY_LIMIT
    )
    assert "tokens in 0 / out 0 (all cached)" in page
    page = step_summary(
        priced(cached[0], made, cost=CostReport(0, 0, None, ())), NO_FINDINGS, SUMMARY_LIMIT
    )
    assert "tokens in 10 / out 2 (1 call cached)" in page


@pytest.mark.parametrize(
    "text", ["@octocat", "![i](http://e.example/i.png)", "#12", "(a) <b> & *c*"]
)
def test_the_step_summary_escapes_as_strictly_as_the_markdown_report(text: str) -> None:
    assert cell(text) == md_escape(text)
    assert "@octocat" not in cell("@octocat") and "](http" not in cell(text).replace("\\](http", "")


def test_one_rule_for_dollars_plurals_and_fences() -> None:
    assert usd(0) == "$0.0000" and usd(0.0042) == "$0.0042" and usd(1234.5) == "$1,234.50"
    assert usd(None) == "unpriced"
    assert report_environment("md").filters["usd"] is usd is terminal.usd
    assert report_environment("md").filters["plural"] is plural is fold.plural
    assert plural(3, "retry", "retries") == "3 retries"
    block = fence("x ```` y", "json")
    assert block == "`````json\nx ```` y\n`````\n"
    assert md_fence("x ```` y") == "`````text\nx ```` y\n`````"
