"""One source of truth for the window and the counter, in the dry run and the run; what the
endpoint said is remembered in the call cache (issue 13, items 1 and 2)."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize import RunOptions, find_recipe, run_section
from parallelize.cli.app import app
from parallelize.engine.cache import SCHEMA_VERSION, CallCache
from parallelize.engine.facts import FACTS_TTL
from parallelize.engine.overflows import OverflowMemory
from parallelize.errors import CacheError
from parallelize.inputs.tokens import FOREIGN_RATIO
from parallelize.plan.window import SERVER_FACTS, probe_context_window
from parallelize.recipe.load import override
from parallelize.records import Completion, Usage
from parallelize.render.plan import plan_text

BODY = "".join(f"def f{i}(x):\n    return x * {i}  # helper number {i}\n\n" for i in range(120))
DRY = RunOptions(dry_run=True)
METADATA = ("/props", "/tokenize", "/apply-template", "/v1/models")


def recipe(**values: object):
    return override(find_recipe("summarize"), {"model": "test-model", **values})


def asked(llm: LLMServer) -> list[str]:
    """The metadata paths the server was asked, in order."""
    return [r.path for r in llm.all_requests if r.path in METADATA]


def test_the_servers_counter_is_the_default_and_the_dry_run_plans_as_the_run(
    llm: LLMServer, make_tree
) -> None:
    llm.llama = True
    llm.context_window = 1_500
    root = make_tree({"a.py": BODY, "b.py": BODY.replace("helper", "other")})
    dry = run_section([str(root)], recipe(max_tokens=200), options=DRY)
    assert llm.requests == [] and "/tokenize" in asked(llm)  # counted there; no model call
    plan = plan_text(dry)
    assert "counted with server, no margin" in plan and "went to its tokenizer" in plan
    assert "context window 1,500 tokens (from the server's /props" in plan
    llm.clear()
    run = run_section([str(root)], recipe(max_tokens=200))
    before = llm.all_requests[: llm.all_requests.index(llm.requests[0])]
    assert before == []  # the run plans from what the dry run was told, and its counts
    assert run.exit_code == 0 and run.details["counter"] == "server"
    assert len(run.tasks) == len(dry.tasks) > 2
    assert [t.paths for t in run.tasks] == [t.paths for t in dry.tasks]
    assert "remembered from the endpoint" in run.details["plan_facts"]
    assert all(r.status == 200 for r in llm.requests)  # no chunk overflowed the window
    # One counter: the dry run estimates what the server then reports as used.
    assert dry.estimate.input_tokens == pytest.approx(run.usage.prompt_tokens, rel=0.03)


def test_remembered_facts_and_counts_need_no_server_until_refresh(
    llm: LLMServer, make_tree
) -> None:
    llm.llama = True
    root = make_tree({"a.py": BODY})
    first = run_section([str(root)], recipe(), options=DRY)
    llm.clear()
    llm.llama = False  # the server forgot how to count: the cache has not
    again = run_section([str(root)], recipe(), options=DRY)
    assert asked(llm) == [] and again.details["counter"] == "server"
    assert again.details["inputs"]["tokens"] == first.details["inputs"]["tokens"]
    refreshed = run_section([str(root)], recipe(), options=RunOptions(dry_run=True, refresh=True))
    assert refreshed.details["counter"] == "cl100k_base" and "/props" in asked(llm)


def test_tiktoken_for_another_model_keeps_the_measured_margin(llm: LLMServer, make_tree) -> None:
    llm.llama = True  # it could count, but a local --tokenizer sends it no text
    root = make_tree({"a.py": BODY * 3})
    foreign = run_section(
        [str(root)], recipe(tokenizer="cl100k", context_window=4_000), options=DRY
    )
    assert asked(llm) == []  # --tokenizer, --context-window and --model: nothing to ask
    windowed = run_section([str(root)], recipe(tokenizer="cl100k"), options=DRY)
    assert "/props" in asked(llm) and "/tokenize" not in asked(llm)
    assert windowed.details["context_window"] == 4096 and windowed.details["counter_margin"] > 0
    own = run_section(
        [str(root)], recipe(model="gpt-4o", tokenizer="o200k", context_window=4_000), options=DRY
    )
    assert foreign.inputs and own.inputs
    assert foreign.inputs.margin == pytest.approx(1 - 1 / FOREIGN_RATIO, abs=0.001)
    assert own.inputs.margin == 0 and "no margin" in plan_text(own)
    assert f"margin {1 - 1 / FOREIGN_RATIO:.0%} of the window" in plan_text(foreign)
    assert len(foreign.tasks) > len(own.tasks)  # the same text, a smaller usable window


def test_a_dry_run_whose_endpoint_does_not_answer_plans_locally(
    llm: LLMServer, make_tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{closed}/v1")
    root = make_tree({"a.py": BODY})
    dry = run_section([str(root)], recipe(), options=DRY)
    assert dry.exit_code == 0 and dry.tasks
    assert "did not answer: planned locally" in plan_text(dry)
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("OPENAI_API_KEY")
    nowhere = run_section([str(root)], recipe(), options=DRY)  # no endpoint configured at all
    assert nowhere.exit_code == 0 and nowhere.details["plan_facts"] == ""


def old_cache(path: Path) -> None:
    """A cache file as parallelize wrote it before the schema was versioned (one call in it)."""
    db = sqlite3.connect(path / "calls.sqlite3")
    db.executescript(
        "CREATE TABLE calls (key TEXT PRIMARY KEY, model TEXT NOT NULL, text TEXT NOT NULL,"
        " finish_reason TEXT, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
        " tool_calls TEXT, truncated INTEGER NOT NULL, created REAL NOT NULL, used REAL NOT NULL);"
        "CREATE INDEX calls_used ON calls (used);"
        "INSERT INTO calls VALUES ('k1', 'm', 'kept answer', 'stop', 3, 4, NULL, 0, 1.0, 1.0);"
    )
    db.close()


def test_an_old_cache_is_migrated_and_a_newer_one_only_read(tmp_path: Path) -> None:
    old_cache(tmp_path)
    with CallCache(tmp_path) as cache:
        assert not cache.read_only and cache.get_many(["k1"])["k1"].text == "kept answer"
        cache.put_fact("http://h/v1", "m", "server", {"window": 4096})
    db = sqlite3.connect(tmp_path / "calls.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with CallCache(tmp_path) as newer:
        assert newer.read_only and "newer parallelize" in (newer.warning or "")
        assert newer.get_fact("http://h/v1", "m", "server") is not None  # read...
        newer.put("k2", Completion("x", "stop", Usage(1, 1), "m"))  # ...never written
        newer.put_fact("http://h/v1", "m2", "server", {"window": 1})
        with pytest.raises(CacheError, match="written by a newer parallelize: not cleared"):
            newer.clear()
    with CallCache(tmp_path) as again:
        assert (
            again.get_many(["k2"]) == {} and again.get_fact("http://h/v1", "m2", "server") is None
        )


def test_facts_expire_are_forgotten_and_never_hold_credentials(tmp_path: Path) -> None:
    secret_url = "https://someone:pa55w0rd-in-url@proxy.example/v1?api-key=qu3ry-s3cret"
    with CallCache(tmp_path) as cache:
        cache.put_fact(secret_url, "m", "server", {"window": 8192})
        cache.put_counts("llama:abc", {"h1": 12})
        assert cache.get_fact("https://proxy.example/v1/", "m", "server")[0] == {"window": 8192}
        assert cache.get_counts("llama:abc", ["h1", "h2"]) == {"h1": 12}
        cache._db.execute("UPDATE facts SET created = ?", (time.time() - FACTS_TTL - 1,))
        assert cache.get_fact(secret_url, "m", "server") is None  # a day old: ask again
        cache.put_fact(secret_url, "m", "server", {"window": 8192})
        assert cache.forget_facts("https://proxy.example/v1", "m") == 1
    with CallCache(tmp_path) as cache:
        assert cache.get_fact(secret_url, "m", "server") is None
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"pa55w0rd" not in stored and b"someone" not in stored and b"qu3ry" not in stored


def test_an_overflow_reply_makes_the_next_plan_ask_the_window_again(
    llm: LLMServer, make_tree, tmp_path: Path
) -> None:
    llm.llama = True
    root = make_tree({"a.py": BODY, "big.py": BODY * 4})
    options = RunOptions(cache_dir=tmp_path / "cache")
    first = run_section([str(root)], recipe(chunking={"by": "file"}), options=options)
    assert first.exit_code == 0
    with CallCache(tmp_path / "cache") as cache:
        assert cache.get_fact(llm.base_url, "test-model", SERVER_FACTS) is not None
    llm.context_window = 900  # the server shrank: the plan still trusts the remembered window
    healed = run_section(
        [str(root)], recipe(chunking={"by": "file"}, max_tokens=99), options=options
    )
    assert healed.exit_code == 0 and any(r.status == 400 for r in llm.requests)
    with CallCache(tmp_path / "cache") as cache:
        assert cache.get_fact(llm.base_url, "test-model", SERVER_FACTS) is None
    llm.clear()
    run_section([str(root)], recipe(chunking={"by": "file"}, max_tokens=99), options=options)
    assert "/props" in asked(llm)  # asked again, so the next plan knows the new window


def test_a_dry_run_asks_the_base_url_flag_not_only_the_environment(
    llm: LLMServer, make_tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm.llama = True
    monkeypatch.delenv("OPENAI_BASE_URL")
    root = make_tree({"a.py": BODY})
    args = ["section", str(root), "-p", "x", "-m", "test-model", "--dry-run"]
    done = CliRunner().invoke(app, [*args, "--base-url", llm.base_url])
    assert done.exit_code == 0, done.stderr
    assert "/props" in asked(llm) and llm.requests == []
    assert "from the server's /props" in done.stdout


def test_a_remembered_refusal_keeps_the_facts_so_a_healed_rerun_needs_no_server(
    llm: LLMServer, make_tree, tmp_path: Path
) -> None:
    llm.llama = True
    llm.context_window = 700  # the server refuses what --context-window 8192 plans
    root = make_tree({"big.py": BODY * 2})
    options = RunOptions(cache_dir=tmp_path / "cache")
    healed = recipe(chunking={"by": "file"}, context_window=8_192, max_tokens=50)
    first = run_section([str(root)], healed, options=options)
    assert first.exit_code == 0 and any(r.status == 400 for r in llm.requests)
    llm.clear()
    again = run_section([str(root)], healed, options=options)
    assert again.exit_code == 0 and again.output == first.output
    assert llm.all_requests == []  # the refusal, the parts and the counts are all remembered


def test_a_remembered_refusal_expires_and_cache_clear_forgets_it(tmp_path: Path) -> None:
    memory = OverflowMemory(tmp_path)
    memory.remember("fresh", "request (900 tokens) exceeds the available context size (700)")
    stale = {"key": "stale", "error": "too long", "at": time.time() - FACTS_TTL - 1}
    with memory.path.open("a") as handle:
        handle.write(json.dumps(stale) + "\n")
    assert set(OverflowMemory(tmp_path).recall(["fresh", "stale"])) == {"fresh"}
    with CallCache(tmp_path) as cache:
        cache.clear()
    assert not memory.path.exists() and OverflowMemory(tmp_path).recall(["fresh"]) == {}


@pytest.mark.parametrize("n_ctx", [10**18, True, -5, "4096"])
def test_a_window_no_model_has_is_not_believed(n_ctx: object) -> None:
    props = {"default_generation_settings": {"n_ctx": n_ctx}}
    assert probe_context_window(lambda path: props if path == "props" else None, "m") is None
