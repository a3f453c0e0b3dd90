"""The call cache: what a key holds, re-runs and resumes, secrets, sharing across processes."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize import RunOptions, find_recipe, run_section
from parallelize.cli.app import app
from parallelize.engine.cache import CACHE_FILE, CallCache, request_key
from parallelize.engine.session import engine
from parallelize.errors import CacheError
from parallelize.plan.tasks import make_task
from parallelize.recipe.load import override
from parallelize.records import ChatRequest, Completion, Usage

KEY = "sk-test-loopback-key-0000"  # what the `llm` fixture exports as OPENAI_API_KEY


def recipe(**values: object):
    return override(find_recipe("summarize"), {"model": "test-model", **values})


def tree(make_tree, n: int = 3) -> Path:
    return make_tree({f"m{i}.txt": f"MARKER-{i}\n" + "text line\n" * 5 for i in range(n)})


def completion(i: int) -> Completion:
    return Completion(f"text {i}", "stop", Usage(1, 1), "m")


def request(**params: object) -> ChatRequest:
    return ChatRequest("m", ({"role": "user", "content": "hi"},), params)


def test_key_covers_what_shapes_the_answer_and_nothing_else() -> None:
    base = request_key("http://x/v1", request(temperature=0.2))
    assert base == request_key("http://x/v1/", request(temperature=0.2, stream=False, user="u"))
    different = [
        request_key("http://y/v1", request(temperature=0.2)),
        request_key("http://x/v1", request(temperature=0.3)),
        request_key("http://x/v1", request(temperature=0.2, seed=1)),
        request_key("http://x/v1", request(temperature=0.2, response_format={"type": "json"})),
        request_key("http://x/v1", request(temperature=0.2), api_version="2024-06-01"),
        request_key(
            "http://x/v1",
            ChatRequest("m", ({"role": "user", "content": "hi"},), {"temperature": 0.2}, 1),
        ),
    ]
    assert base not in different and len(set(different)) == len(different)


def test_rerun_makes_no_request_and_saves_the_cost(llm: LLMServer, make_tree) -> None:
    root, options = tree(make_tree), RunOptions(price_in=1.0, price_out=2.0)
    first = run_section([str(root)], recipe(chunking={"by": "file"}), options=options)
    assert len(llm.requests) == 3 and first.details["cost"]["usd"] > 0
    llm.clear()
    again = run_section([str(root)], recipe(chunking={"by": "file"}), options=options)
    assert llm.requests == []
    assert again.output == first.output
    assert all(r.completion and r.completion.cached for r in again.results)
    assert again.usage == Usage()  # nothing spent ...
    assert again.details["cost"]["saved_usd"] == pytest.approx(first.details["cost"]["usd"])


def test_changing_the_merge_prompt_reruns_only_the_merge(llm: LLMServer, make_tree) -> None:
    root = tree(make_tree)

    def run(prompt: str):
        merge = {"strategy": "llm", "prompt": prompt + "\n{{ input }}"}
        return run_section([str(root)], recipe(chunking={"chunks": 3}, merge=merge))

    run("Combine them, version A")
    llm.clear()
    result = run("Combine them, version B")
    assert len(llm.requests) == 1 and "version B" in llm.requests[0].last_user
    assert result.exit_code == 0


def test_errors_are_not_cached_and_truncated_replies_are_flagged(
    llm: LLMServer, make_tree, tmp_path: Path
) -> None:
    llm.script("MARKER-1", status=500, times=1)
    llm.script("MARKER-2", "cut sho", finish_reason="length")
    root, options = tree(make_tree), RunOptions(max_retries=0, cache_dir=tmp_path)
    first = run_section([str(root)], recipe(chunking={"by": "file"}), options=options)
    assert [r.status for r in first.results] == ["ok", "failed", "truncated"]
    llm.clear()
    again = run_section([str(root)], recipe(chunking={"by": "file"}), options=options)
    assert len(llm.requests) == 1 and "MARKER-1" in llm.requests[0].last_user  # only the error
    assert [r.status for r in again.results] == ["ok", "ok", "truncated"]
    with CallCache(tmp_path) as cache:
        info = cache.info()
    assert (info.entries, info.truncated) == (3, 1)


def test_no_cache_and_refresh(llm: LLMServer, make_tree, tmp_path: Path) -> None:
    root, job = tree(make_tree, 2), recipe(chunking={"by": "file"})
    run_section([str(root)], job, options=RunOptions(cache=False, cache_dir=tmp_path))
    assert not (tmp_path / CACHE_FILE).exists() and len(llm.requests) == 2
    run_section([str(root)], job, options=RunOptions(cache_dir=tmp_path))
    run_section([str(root)], job, options=RunOptions(cache_dir=tmp_path, refresh=True))
    assert len(llm.requests) == 6  # --refresh calls again ...
    llm.clear()
    run_section([str(root)], job, options=RunOptions(cache_dir=tmp_path))
    assert llm.requests == []  # ... and the cache still answers afterwards


def test_the_api_key_never_reaches_the_cache(llm: LLMServer, make_tree, tmp_path: Path) -> None:
    run_section([str(tree(make_tree))], recipe(), options=RunOptions(cache_dir=tmp_path))
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"MARKER-0" in stored  # the right files were read: the reply is there ...
    assert KEY.encode() not in stored and b"Bearer" not in stored  # ... the key is not


def test_vote_samples_stay_distinct_and_are_reused(llm: LLMServer) -> None:
    answers = itertools.count()
    llm.script("pick", lambda body: f"answer {next(answers)}")
    base = make_task(0, "sample", recipe(prompt="pick one"), model="test-model", values={})
    tasks = [
        base.__class__(i, f"sample {i}", ChatRequest(**{**vars(base.request), "sample": i}))
        for i in range(3)
    ]
    with engine(RunOptions(), concurrency=3) as executor:
        first = [r.text for r in executor.run(tasks)]
    with engine(RunOptions(), concurrency=3) as executor:
        again = [r.text for r in executor.run(tasks)]
    assert len(set(first)) == 3 and again == first
    assert len(llm.requests) == 3


WRITER = """
import sys
from parallelize.engine.cache import CallCache
from parallelize.records import Completion, Usage
with CallCache(sys.argv[1]) as cache:
    for i in range(150):
        cache.put(f"{sys.argv[2]}-{i}", Completion(f"text {i}", "stop", Usage(1, 1), "m"))
        cache.get_many([f"{sys.argv[2]}-{i}"])
"""


def test_calls_put_by_many_threads_are_committed_in_few_transactions(tmp_path: Path) -> None:
    cache = CallCache(tmp_path)
    commits = []
    cache._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: cache.put(f"k{i}", completion(i)), range(400)))
    cache.flush()
    other = sqlite3.connect(tmp_path / CACHE_FILE)  # another reader sees them all: committed
    assert other.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 400
    assert 1 <= len(commits) < 400  # grouped, not one commit per call
    cache.put("last", completion(400))
    cache.close()  # closing writes what is still queued
    assert other.execute("SELECT text FROM calls WHERE key = 'last'").fetchone() == ("text 400",)


def test_a_failed_write_is_reported_by_flush_and_the_next_put(tmp_path: Path) -> None:
    cache = CallCache(tmp_path)
    sqlite3.connect(tmp_path / CACHE_FILE).execute("DROP TABLE calls")
    cache.put("k", completion(0))
    with pytest.raises(CacheError, match="cannot write the cache"):
        cache.flush()
    with pytest.raises(CacheError):
        cache.put("k2", completion(1))
    cache.close()


def test_two_processes_share_one_cache_file(tmp_path: Path) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), name], stderr=subprocess.PIPE
        )
        for name in ("a", "b")
    ]
    errors = [w.communicate(timeout=60)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    with CallCache(tmp_path) as cache:
        assert cache.info().entries == 300
        journal = cache._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_cache_commands(llm: LLMServer, make_tree, tmp_path: Path) -> None:
    run_section([str(tree(make_tree, 2))], recipe(chunking={"by": "file"}))
    cli = CliRunner()
    info = cli.invoke(app, ["cache", "info"])
    assert info.exit_code == 0 and "entries: 2" in info.stdout
    kept = cli.invoke(app, ["cache", "clear", "--older-than", "1d"])
    assert kept.exit_code == 0 and "removed 0 cached call(s)" in kept.stderr
    cleared = cli.invoke(app, ["cache", "clear"])
    assert "removed 2 cached call(s)" in cleared.stderr
    assert "entries: 0" in cli.invoke(app, ["cache", "info"]).stdout
    bad = cli.invoke(app, ["cache", "clear", "--older-than", "soon"])
    assert bad.exit_code == 2 and "--older-than: cannot read 'soon'" in bad.stderr


def test_an_unusable_cache_is_a_warning_not_a_failure(llm: LLMServer, make_tree, tmp_path) -> None:
    (tmp_path / CACHE_FILE).write_text("this is not a database")
    notices: list[str] = []
    options = RunOptions(cache_dir=tmp_path, on_notice=notices.append)
    result = run_section([str(tree(make_tree, 1))], recipe(), options=options)
    assert result.exit_code == 0 and len(llm.requests) == 1
    assert "running without the cache" in notices[0] and str(tmp_path) in notices[0]


def test_summary_shows_cost_then_what_the_cache_saved(llm: LLMServer, make_tree) -> None:
    args = ["section", str(tree(make_tree, 2)), "--by", "file", "-m", "test-model"]
    args += ["--price-in", "1", "--price-out", "2"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0 and "cost $0.0" in first.stderr and "saved" not in first.stderr
    again = CliRunner().invoke(app, args)
    assert "2 calls (2 cached)" in again.stderr and "cost $0.0000 (saved $0.0" in again.stderr
    assert again.stdout == first.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--deadline", "soon"], "--deadline: cannot read 'soon' as a duration"),
        (["--no-cache", "--refresh"], "--no-cache and --refresh cannot be combined"),
        (["--max-cost", "1"], "--max-cost needs a price"),
    ],
)
def test_engine_flag_errors(llm: LLMServer, make_tree, flags: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["section", str(tree(make_tree, 1)), "-m", "x-1", *flags])
    assert result.exit_code == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and llm.requests == []
