"""`parallelize batch import`: a Batch API output file read into the call cache, only for keys
this cache exported, through the one reply parser; counts of stored, failed and unknown lines;
every size bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner
from votehelp import judge_says

from parallelize.cli.app import app
from parallelize.engine import batchimport
from parallelize.engine.batchexport import ExportedCall, ExportMemory
from parallelize.engine.cache import CallCache
from parallelize.engine.overflows import OverflowMemory


def reply(text: str, *, finish: str = "stop", model: str = "m") -> dict[str, Any]:
    """A chat-completions body as a server returns it."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }  # fmt: skip


def line(key: str, body: Any = None, *, status: int = 200, error: Any = None) -> dict[str, Any]:
    """One Batch API output line."""
    response = None if body is None else {"status_code": status, "request_id": "r", "body": body}
    return {"id": f"batch_req_{key}", "custom_id": key, "response": response, "error": error}


def write(path: Path, lines: list[Any]) -> Path:
    """Each line as JSON (a string is written as it is: a blank line)."""
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def run_import(path: Path, cache_dir: Path, *extra: str) -> Any:
    args = ["batch", "import", str(path), "--cache-dir", str(cache_dir), *extra]
    return CliRunner().invoke(app, args)


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """A cache directory that exported the calls k1..k6."""
    cache_dir = tmp_path / "cache"
    ExportMemory(cache_dir).remember(ExportedCall(f"k{i}", "m") for i in range(1, 7))
    return cache_dir


def test_answered_lines_are_stored_failed_and_unknown_ones_counted(
    exported: Path, tmp_path: Path
) -> None:
    overflow = {"error": {"message": "the request exceeds the available context size"}}
    output = write(
        tmp_path / "out.jsonl",
        [
            line("k2", reply("second")),  # output order is arbitrary
            line("k1", reply("first")),
            line("k3", {"error": {"message": "boom"}}, status=500),
            line("k4", error={"code": "batch_expired", "message": "not run in time"}),
            line("k5", reply("cut", finish="length")),
            line("k6", overflow, status=400),
            line("stranger", reply("not asked for")),
            line("k1", reply("again")),
            "",
        ],
    )
    run = run_import(output, exported, "--format", "json")
    assert run.exit_code == 1, run.output  # some lines failed
    doc = json.loads(run.stdout)
    assert doc["schema_version"] == 1
    counts = {k: doc[k] for k in ("lines", "stored", "failed", "unknown", "duplicates")}
    assert counts == {"lines": 8, "stored": 3, "failed": 3, "unknown": 1, "duplicates": 1}
    assert doc["truncated"] == 1
    reasons = {f["custom_id"]: f["reason"] for f in doc["failures"]}
    assert reasons["k3"] == "HTTP 500: boom"
    assert reasons["k4"] == "batch_expired: not run in time"
    assert "stored 3, failed 3, unknown 1" in run.stderr
    assert "did not export" in run.stderr
    with CallCache(exported) as cache:
        found = cache.get_many(["k1", "k2", "k3", "k4", "k5", "stranger"])
    assert {k: c.text for k, c in found.items()} == {"k1": "first", "k2": "second", "k5": "cut"}
    assert found["k1"].usage.prompt_tokens == 11 and found["k5"].truncated
    # The overflow is remembered, so a re-run splits that chunk instead of sending it whole.
    assert OverflowMemory(exported).recall(["k6"]) == {"k6": pytest.approx(reasons["k6"])}


def test_a_reply_the_parser_refuses_stores_nothing(exported: Path, tmp_path: Path) -> None:
    output = write(tmp_path / "out.jsonl", [line("k1", {"choices": []}), line("k2", reply("ok"))])
    run = run_import(output, exported)
    assert run.exit_code == 1
    assert "malformed reply: no choices" in run.stderr
    with CallCache(exported) as cache:
        assert set(cache.get_many(["k1", "k2"])) == {"k2"}


def test_every_line_stored_is_exit_0(exported: Path, tmp_path: Path) -> None:
    output = write(tmp_path / "out.jsonl", [line(f"k{i}", reply(f"t{i}")) for i in range(1, 7)])
    run = run_import(output, exported)
    assert run.exit_code == 0, run.output
    assert "stored 6, failed 0, unknown 0" in run.stderr
    assert "re-run the same command" in run.stderr


def test_a_file_of_only_unknown_keys_is_exit_2(exported: Path, tmp_path: Path) -> None:
    output = write(tmp_path / "out.jsonl", [line("x1", reply("a")), line("x2", reply("b"))])
    run = run_import(output, exported)
    assert run.exit_code == 2
    assert "unknown 2" in run.stderr


def test_a_cache_that_exported_nothing_is_exit_2(tmp_path: Path) -> None:
    output = write(tmp_path / "out.jsonl", [line("k1", reply("a"))])
    run = run_import(output, tmp_path / "empty-cache")
    assert run.exit_code == 2
    assert "has exported no calls" in run.stderr and "--export" in run.stderr


def test_a_line_that_is_not_an_output_line_fails_alone(exported: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text('not json\n{"no": "id"}\n' + json.dumps(line("k1", reply("a"))) + "\n")
    run = run_import(output, exported, "--format", "json")
    assert run.exit_code == 1
    doc = json.loads(run.stdout)
    assert (doc["stored"], doc["failed"]) == (1, 2)
    assert [f["line"] for f in doc["failures"]] == [1, 2]


def test_sizes_are_bounded(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = write(tmp_path / "out.jsonl", [line(f"k{i}", reply("x" * 50)) for i in range(1, 4)])
    monkeypatch.setattr(batchimport, "MAX_LINE_BYTES", 100)
    run = run_import(output, exported)
    assert run.exit_code == 2 and "out.jsonl:1: a line longer than 100 bytes" in run.stderr
    monkeypatch.setattr(batchimport, "MAX_LINE_BYTES", 10_000)
    monkeypatch.setattr(batchimport, "MAX_IMPORT_LINES", 2)
    run = run_import(output, exported)
    assert run.exit_code == 2 and "more than 2 lines" in run.stderr
    monkeypatch.setattr(batchimport, "MAX_IMPORT_BYTES", 100)
    run = run_import(output, exported)
    assert run.exit_code == 2 and "more than an import reads" in run.stderr


def test_cache_clear_forgets_the_exports(exported: Path, tmp_path: Path) -> None:
    output = write(tmp_path / "out.jsonl", [line("k1", reply("a"))])
    cleared = CliRunner().invoke(app, ["cache", "clear", "--cache-dir", str(exported)])
    assert cleared.exit_code == 0, cleared.output
    run = run_import(output, exported)
    assert run.exit_code == 2 and "has exported no calls" in run.stderr


def test_a_missing_file_is_exit_2(exported: Path, tmp_path: Path) -> None:
    run = run_import(tmp_path / "nowhere.jsonl", exported)
    assert run.exit_code == 2 and "cannot read" in run.stderr


# ---- export, answer elsewhere, import, re-run ----

RUNNER = Path(__file__).resolve().parents[1] / "tools" / "realserver" / "batchrun.py"


def answer_elsewhere(requests: Path, results: Path, base_url: str) -> None:
    """What a user without a Batch API does: tools/realserver/batchrun.py against the server."""
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(requests), str(results), "--base-url", base_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_export_import_then_the_same_command_runs_from_the_cache(
    llm: LLMServer, make_tree, tmp_path: Path
) -> None:
    root = make_tree({f"m{i}.txt": f"MARKER-{i}\n" + "text line\n" * 20 for i in range(4)})
    command = ["section", str(root), "-p", "Sum up", "-m", "test-model", "--by", "file", "-q"]
    online = cli(*command, "--cache-dir", str(tmp_path / "online"))
    assert online.exit_code == 0, online.output
    online_bodies = sorted(json.dumps(r.body, sort_keys=True) for r in llm.requests)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    llm.clear()

    requests = tmp_path / "requests.jsonl"
    exported = cli(*command, *cache, "--batch", "--export", str(requests))
    assert exported.exit_code == 0, exported.output
    assert llm.requests == []  # no chat request: the calls went to the file
    assert "exported 4 call(s) to" in exported.stderr and "error" not in exported.stderr
    assert exported.stdout == ""
    lines = [json.loads(x) for x in requests.read_text().splitlines()]
    assert {(x["method"], x["url"]) for x in lines} == {("POST", "/v1/chat/completions")}
    assert all(len(x["custom_id"]) == 64 for x in lines)
    # Each body is exactly what the online run sent.
    assert sorted(json.dumps(x["body"], sort_keys=True) for x in lines) == online_bodies

    results = tmp_path / "results.jsonl"
    answer_elsewhere(requests, results, llm.base_url)
    llm.clear()
    imported = cli("batch", "import", str(results), *cache)
    assert imported.exit_code == 0, imported.output
    assert "stored 4, failed 0, unknown 0" in imported.stderr

    again = cli(*command, *cache)
    assert again.exit_code == 0, again.output
    assert llm.requests == []  # every call answered by the import
    assert again.stdout == online.stdout


def test_export_stage_by_stage_for_a_vote_with_a_judge(llm: LLMServer, tmp_path: Path) -> None:
    """A vote's candidates, then its judge: each --export writes the next stage's calls."""
    judge_says(llm, '{"winner": "B", "reason": "the clearest"}')
    command = ["vote", "Name a colour", "-n", "3", "-m", "test-model", "--no-early-stop", "-q"]
    online = cli(*command, "--cache-dir", str(tmp_path / "online"))
    assert online.exit_code == 0, online.output
    cache = ["--cache-dir", str(tmp_path / "cache")]
    llm.clear()
    stages = []
    for stage in range(3):
        requests = tmp_path / f"requests-{stage}.jsonl"
        exported = cli(*command, *cache, "--export", str(requests))
        assert exported.exit_code == 0, exported.output
        if "exported" not in exported.stderr:
            break  # every call answered: the command finished
        stages.append(len(requests.read_text().splitlines()))
        answer_elsewhere(requests, tmp_path / f"results-{stage}.jsonl", llm.base_url)
        imported = cli("batch", "import", str(tmp_path / f"results-{stage}.jsonl"), *cache)
        assert imported.exit_code == 0, imported.output
    assert stages[0] == 3 and len(stages) >= 2  # the candidates, then the judge
    llm.clear()
    again = cli(*command, *cache)
    assert again.exit_code == 0 and llm.requests == []
    assert again.stdout == online.stdout


def test_export_refuses_what_cannot_work(llm: LLMServer, make_tree, tmp_path: Path) -> None:
    root = make_tree({"a.txt": "text\n"})
    base = ["section", str(root), "-p", "Sum up", "-m", "test-model", "--export", "x.jsonl"]
    detached = cli(*base, "--detach")
    assert detached.exit_code == 2 and "drop --detach" in detached.stderr
    uncached = cli(*base, "--no-cache")
    assert uncached.exit_code == 2 and "needs the call cache" in uncached.stderr
    tools = cli(*base, "--tools", "fs")  # the flag's tools, not only the recipe's
    assert tools.exit_code == 2 and "--export cannot be combined with tools" in tools.stderr
    assert not (tmp_path / "x.jsonl").exists() and not Path("x.jsonl").exists()
    assert llm.requests == []
