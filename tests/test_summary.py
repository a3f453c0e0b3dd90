"""A quiet summary: repeated per-task lines fold into one line with a count and the first few
names (`--verbose` names them all), a long server message is printed once, counts agree in
number."""

from __future__ import annotations

import re

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app
from parallelize.render.fold import Fold, RepeatedErrors, listed, plural

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
    repeated = RepeatedErrors()
    long = "y" * 80
    assert repeated.shown("a", long) == long and repeated.shown("a", long) == long
    assert repeated.shown("b", long) == "(same error as a)"
    assert repeated.shown("b", "short") == "short" and repeated.shown("c", "short") == "short"
