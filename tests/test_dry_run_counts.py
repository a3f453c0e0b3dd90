"""A dry run counts each text once: the estimate is made from the plan's counts (and equals
counting every prompt again), the splitter counts from the nearest marks, and the counting
pool's caller helps instead of waiting. Speed itself is measured by bench/dryrun.py."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parallelize import RunOptions, run_section
from parallelize.cli import app
from parallelize.inputs import tokens
from parallelize.inputs.read import InputOptions, discover
from parallelize.inputs.tokens import ESTIMATE, TokenCounter, get_counter
from parallelize.plan.chunking import chunk_budget, split_document
from parallelize.plan.promptcounts import planned_request_tokens
from parallelize.plan.sections import plan_chunks, prepare_section
from parallelize.plan.tasks import section_tasks
from parallelize.recipe.load import parse_recipe

O200K = get_counter(tokenizer="o200k")
needs_tiktoken = pytest.mark.skipif(
    not O200K.exact, reason="needs the o200k_base encoding in TIKTOKEN_CACHE_DIR"
)

#: Texts whose frames are not all safe cuts: a first line that starts with "/" or is blank,
#: no final newline, CRLF, frame-like lines (escaped), long lines cut mid-line, digits.
AWKWARD = {
    "a/plain.py": "def f(x):\n    return x + 1\n" * 300,
    "a/slash.js": "// a comment first\nconst a = 1;\n/* block */\nlet b = [1, 2, 3];\n" * 200,
    "a/blank.md": "\n\n  \nText after blank lines.\n\n# Heading\n" * 150,
    "b/no-newline.txt": "last line has no newline " * 400,
    "b/crlf.txt": "windows line\r\n  indented\r\n" * 300,
    "b/frames.txt": "<file path='x'>\n</file>\n\\</file>\ntext\n" * 120,
    "b/long-line.csv": ",".join(str(i * 7919) for i in range(6000)) + "\n",
    "c/tiny.txt": "x",
}


def _tree(make_tree) -> Path:
    return make_tree(AWKWARD)


def _prepared(root: Path, recipe_text: str, counter: TokenCounter):
    recipe = parse_recipe(recipe_text, source="r.yaml")
    prepared = prepare_section([str(root)], recipe, model="gpt-4o")
    assert prepared.counter.name == counter.name
    tasks = section_tasks(recipe, prepared.plan.chunks, model="gpt-4o")
    return prepared, tasks


RECIPES = {
    "budget": "prompt: 'Summarize {{ paths }}'\nsystem: be terse\ntokenizer: o200k\n"
    "context_window: 900\nmax_tokens: 64\n",
    "overlap": "prompt: 'Review'\ntokenizer: o200k\ncontext_window: 700\nmax_tokens: 64\n"
    "chunking: {overlap: 2}\n",
    "by-file": "prompt: 'Translate'\ntokenizer: o200k\nchunking: {by: file}\n",
    "aspects+matrix+json": "prompt: '{{ aspect }} {{ instructions }} in {{ lang }}: {{ input }}"
    " (end)'\ntokenizer: o200k\ncontext_window: 2000\nmax_tokens: 100\n"
    "aspects: [{name: sec, instructions: SECURITY}, style]\nmatrix: {lang: [fr, de]}\n"
    "merge: {strategy: json}\n",
    "count": "prompt: 'Go'\ntokenizer: o200k\nchunking: {chunks: 5}\n",
}


@needs_tiktoken
@pytest.mark.parametrize("name", RECIPES)
def test_the_plans_request_counts_equal_counting_every_prompt(make_tree, name: str) -> None:
    prepared, tasks = _prepared(_tree(make_tree), RECIPES[name], O200K)
    planned = planned_request_tokens(tasks, prepared.plan.chunks, prepared.counter)
    direct = [prepared.counter.request_tokens(t.request.messages) for t in tasks]
    assert planned == direct and len(tasks) > 1


def test_a_counter_whose_counts_do_not_add_up_counts_every_prompt(make_tree) -> None:
    recipe = parse_recipe("prompt: Go\ntokenizer: estimate\n", source="r.yaml")
    prepared = prepare_section([str(_tree(make_tree))], recipe, model="m")
    tasks = section_tasks(recipe, prepared.plan.chunks, model="m")
    assert planned_request_tokens(tasks, prepared.plan.chunks, ESTIMATE) is None


@needs_tiktoken
def test_tasks_not_where_expected_are_counted_not_guessed(make_tree) -> None:
    prepared, tasks = _prepared(_tree(make_tree), RECIPES["budget"], O200K)
    shuffled = list(reversed(tasks))  # task k no longer works on chunk k
    planned = planned_request_tokens(shuffled, prepared.plan.chunks, prepared.counter)
    assert planned == [prepared.counter.request_tokens(t.request.messages) for t in shuffled]


@needs_tiktoken
def test_the_dry_run_estimate_is_the_sum_of_its_prompts(make_tree, monkeypatch) -> None:
    root = _tree(make_tree)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    args = ["section", str(root), "--dry-run", "--tokenizer", "o200k", "-p", "Sum up"]
    args += ["--context-window", "1500", "--max-tokens", "100", "--format", "json"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    prompts = [O200K.request_tokens(task["messages"]) for task in report["plan"]]
    assert report["estimate"]["input_tokens"] == sum(prompts) and len(prompts) > 3


def _code(functions: int, seed: int) -> str:
    return "".join(
        f'def f{seed}_{i}(x):\n    """Doc {i}."""\n    return x * {i + seed}\n\n'
        for i in range(functions)
    )


@needs_tiktoken
def test_a_dry_run_counts_each_text_about_once(make_tree, monkeypatch) -> None:
    """The estimate used to count every prompt again: twice the text."""
    root = make_tree({f"m{n}.py": _code(n * 40, n) for n in range(1, 12)})
    seen = [0]

    def counting(text: str) -> int:
        seen[0] += len(text)
        return O200K.count(text)

    key = ("o200k_base", tokens.os.environ.get("TIKTOKEN_CACHE_DIR"))
    monkeypatch.setitem(tokens._loaded, key, replace(O200K, count=counting))
    recipe = parse_recipe(
        "prompt: Go\ntokenizer: o200k\ncontext_window: 3000\nmax_tokens: 200\n", source="r"
    )
    result = run_section([str(root)], recipe, options=RunOptions(dry_run=True))
    sent = sum(len(m["content"]) for t in result.tasks for m in t.request.messages)
    assert result.estimate is not None and result.estimate.calls == len(result.tasks)
    assert seen[0] < 1.2 * sent  # read once; frames, template and the odd recount aside


@needs_tiktoken
def test_marks_change_no_plan_only_what_is_counted(make_tree) -> None:
    root = make_tree(
        {"big.py": "".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(3000))}
    )
    found = discover([str(root)], counter=O200K, options=InputOptions())
    (doc,) = found.documents
    assert doc.marks and doc.tokens == O200K.count(doc.text)
    assert all(O200K.count(doc.text[:offset]) == before for offset, before in doc.marks[::7])
    unmarked = replace(doc, marks=())
    for budget in (300, 1000, 4000):
        marked_parts = split_document(doc, budget, O200K)
        assert marked_parts == split_document(unmarked, budget, O200K)
        assert all(p.tokens == O200K.count(p.text) for p in marked_parts)


def test_the_estimate_counter_keeps_no_marks(make_tree) -> None:
    """Its counts are rounded up per piece: counted in marks, a text's total would change."""
    root = make_tree({"big.txt": "some words on a line\n" * 5_000})
    (doc,) = discover([str(root)], counter=ESTIMATE, options=InputOptions()).documents
    assert doc.marks == () and len(doc.segments) > 1
    assert doc.tokens == sum(t for _, t in doc.segments)


@needs_tiktoken
def test_budget_plans_with_marks_match_plans_without(make_tree) -> None:
    root = _tree(make_tree)
    docs = discover([str(root)], counter=O200K, options=InputOptions()).documents
    plain = [replace(d, marks=()) for d in docs]
    for budget in (200, 700):
        assert chunk_budget(docs, budget, O200K) == chunk_budget(plain, budget, O200K)
    recipe = parse_recipe("prompt: Go\ntokenizer: o200k\nmax_tokens: 100\n", source="r")
    kept = plan_chunks(docs, recipe, counter=O200K, model="gpt-4o", window=1000)
    assert kept == plan_chunks(plain, recipe, counter=O200K, model="gpt-4o", window=1000)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_offline_without_encodings_the_dry_run_estimates(make_tree, tmp_path, monkeypatch) -> None:
    """No tiktoken encoding and no network: the calibrated estimate plans, counts every prompt
    (its rounded counts do not add up) and says so."""
    root = make_tree({f"m{n}.py": _code(n * 30, n) for n in range(1, 6)})
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_closed_port()}")
    recipe = parse_recipe("prompt: Go\ntokenizer: o200k\nmax_tokens: 100\n", source="r")
    result = run_section([str(root)], recipe, options=RunOptions(dry_run=True))
    assert result.inputs is not None and result.inputs.counter == "estimate"
    assert any("token counts are estimates" in w for w in result.warnings)
    prompts = [ESTIMATE.request_tokens(t.request.messages) for t in result.tasks]
    assert result.estimate is not None and result.estimate.input_tokens == sum(prompts)
