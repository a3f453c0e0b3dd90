"""`parallelize batch list|status|cancel` against the loopback Batch API fake (tests/batchserver.py)
and against a server without a Batch API (tests/llmserver.py answers 404 there, as llama.cpp does).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batchserver import BatchServer
from llmserver import LLMServer
from test_batchserver import call, upload
from typer.testing import CliRunner

from parallelize.cli.app import app

KEY = "sk-test-batch-key-0000"


@pytest.fixture(scope="module")
def _fake() -> Iterator[BatchServer]:
    with BatchServer() as server:
        yield server


@pytest.fixture
def fake(_fake: BatchServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchServer]:
    _fake.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", _fake.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    yield _fake
    _fake.reset()


def make_batch(server: BatchServer, run: str, lines: int = 2) -> dict[str, Any]:
    """A batch created the way the engine creates one (a file of lines, metadata naming the run)."""
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
    rows = [
        {"custom_id": f"{run}-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        for i in range(lines)
    ]
    created = call(
        server,
        "POST",
        "/v1/batches",
        {
            "input_file_id": upload(server, rows),
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"parallelize_run": run},
        },
    )
    return created


def batch(*args: str) -> Any:
    return CliRunner().invoke(app, ["batch", *args])


def test_list_shows_each_batch_newest_first(fake: BatchServer) -> None:
    first, second = make_batch(fake, "review-a", 3), make_batch(fake, "review-b", 1)
    run = batch("list")
    assert run.exit_code == 0, run.output
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "CREATED", "DONE/TOTAL", "FAILED", "RUN"]
    assert lines[1].split()[0] == second["id"] and lines[1].split()[-1] == "review-b"
    assert lines[2].split()[0] == first["id"] and "0/3" in lines[2]
    assert run.stderr == ""


def test_list_and_status_retry_a_transient_failure(fake: BatchServer) -> None:
    made = make_batch(fake, "review-a", 1)
    fake.api_faults = [("GET", r"/batches$", 502, "0"), ("GET", r"/batches/", 0, None)]
    listed = batch("list")
    assert listed.exit_code == 0, listed.output
    assert made["id"] in listed.stdout
    shown = batch("status", made["id"])
    assert shown.exit_code == 0, shown.output
    assert fake.api_faults == []


def test_list_json_is_a_versioned_document(fake: BatchServer) -> None:
    made = make_batch(fake, "review-a", 2)
    run = batch("list", "--format", "json")
    assert run.exit_code == 0, run.output
    doc = json.loads(run.stdout)
    assert doc["schema_version"] == 1 and doc["command"] == "batch list"
    (only,) = doc["batches"]
    assert only["id"] == made["id"] and only["status"] == "validating"
    assert only["request_counts"] == {"total": 2, "completed": 0, "failed": 0}
    assert only["run"] == "review-a" and only["metadata"] == {"parallelize_run": "review-a"}
    assert only["known"] is False


def test_list_pages_through_the_server_up_to_the_limit(fake: BatchServer) -> None:
    made = [make_batch(fake, f"r{i}", 1)["id"] for i in range(5)]
    run = batch("list", "--limit", "3", "--format", "json")
    assert [b["id"] for b in json.loads(run.stdout)["batches"]] == made[::-1][:3]
    assert fake.count_path("GET", r"/v1/batches$") == 1  # one page held all three


def test_status_follows_a_batch_to_completion(fake: BatchServer) -> None:
    made = make_batch(fake, "review-a", 2)
    seen = []
    for _ in range(3):
        run = batch("status", made["id"], "--format", "json")
        assert run.exit_code == 0, run.output
        seen.append(json.loads(run.stdout)["batches"][0])
    assert [b["status"] for b in seen] == ["in_progress", "finalizing", "completed"]
    assert seen[-1]["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert seen[-1]["output_file_id"]
    text = batch("status", made["id"]).stdout
    assert f"id: {made['id']}" in text and "status: completed" in text
    assert "requests: 2 completed, 0 failed, 2 total" in text and "run: review-a" in text


def test_a_failed_batch_shows_the_servers_reasons(fake: BatchServer) -> None:
    fake.outcomes = ["failed"]
    made = make_batch(fake, "review-a", 1)
    run = batch("status", made["id"])
    assert "status: failed" in run.stdout and "error: " in run.stdout


def test_cancel_asks_the_server_to_cancel(fake: BatchServer) -> None:
    made = make_batch(fake, "review-a", 2)
    run = batch("cancel", made["id"])
    assert run.exit_code == 0, run.output
    assert "status: cancelling" in run.stdout
    assert fake.count_path("POST", rf"/v1/batches/{made['id']}/cancel$") == 1
    after = json.loads(batch("status", made["id"], "--format", "json").stdout)
    assert after["batches"][0]["status"] == "cancelled"


def test_an_unknown_batch_is_exit_2(fake: BatchServer) -> None:
    run = batch("status", "batch_nope")
    assert run.exit_code == 2
    assert "no batch batch_nope at this endpoint" in run.stderr and run.stdout == ""
    assert batch("cancel", "batch_nope").exit_code == 2


def test_an_id_that_is_not_one_never_reaches_the_server(fake: BatchServer) -> None:
    run = batch("status", "../files/file-1")
    assert run.exit_code == 2 and "is not a batch id" in run.stderr
    assert fake.all_requests == []


def test_a_wrong_key_is_exit_2_without_showing_it(
    fake: BatchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.api_key = KEY  # the server wants this one
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-for-this-test-1234")
    run = batch("list")
    assert run.exit_code == 2
    assert "HTTP 401" in run.stderr and "OPENAI_API_KEY" in run.stderr
    assert "sk-wrong-key-for-this-test-1234" not in run.output


@pytest.mark.parametrize("command", [["list"], ["status", "batch_1"], ["cancel", "batch_1"]])
def test_a_server_without_a_batch_api_says_to_export(llm: LLMServer, command: list[str]) -> None:
    run = batch(*command)
    assert run.exit_code == 2
    assert "this endpoint has no Batch API; use --export/batch import" in run.stderr


def test_no_endpoint_is_exit_2() -> None:
    run = batch("list")
    assert run.exit_code == 2 and "no model endpoint configured" in run.stderr


def test_the_batches_this_cache_submitted_are_marked(
    fake: BatchServer, make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARALLELIZE_BATCH_POLL", "0.01")
    other = make_batch(fake, "someone-else", 1)
    root = make_tree({"a.txt": "text a\n", "b.txt": "text b\n"})
    cache = ["--cache-dir", str(tmp_path / "cache")]
    section = ["section", str(root), "--by", "file", "-m", "test-model", "-p", "Sum up"]
    detached = CliRunner().invoke(app, [*section, *cache, "--batch", "--detach"])
    assert detached.exit_code == 6, detached.output
    ours = [b for b in fake.batches if b != other["id"]]
    assert len(ours) == 1
    run = batch("list", *cache)
    rows = [line.split()[1] for line in run.stdout.splitlines()[1:-1] if line.startswith("*")]
    assert rows == ours and run.stdout.endswith("* submitted from this cache\n")
    doc = json.loads(batch("list", *cache, "--format", "json").stdout)
    assert {b["id"]: b["known"] for b in doc["batches"]} == {ours[0]: True, other["id"]: False}
    status = batch("status", ours[0], *cache).stdout
    assert "known to this cache: yes" in status and "run: pz-" in status
    # Another cache knows none of them, and looking does not create one.
    elsewhere = batch("list", "--cache-dir", str(tmp_path / "none"))
    assert "*" not in elsewhere.stdout and not (tmp_path / "none").exists()
