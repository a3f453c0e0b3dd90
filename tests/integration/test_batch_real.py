"""Export/import against the real llama.cpp server, which has no Batch API (issue 17).

`section --batch --export FILE` writes the calls and sends none; tools/realserver/batchrun.py
posts each line to llama-server's /v1/chat/completions and writes the output JSONL the Batch
API would; `parallelize batch import` stores it; the same command then makes no chat request
and prints what an online run of it prints. A counting proxy in front of the server sees every
request (llama-server logs none). `batch list` on llama.cpp says to use export/import."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from realcli import run_cli
from test_warm_rerun_real import CountingProxy

RUNNER = Path(__file__).resolve().parents[2] / "tools" / "realserver" / "batchrun.py"
CHAT = "/v1/chat/completions"


@pytest.fixture
def proxy(server_4k) -> Iterator[CountingProxy]:
    server = CountingProxy(server_4k.base_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _tree(root: Path) -> Path:
    root.mkdir()
    for i in range(5):
        text = f"Note {i}: the shipment left port {i} on Monday.\n" + "It rained all day.\n" * 8
        (root / f"note{i}.txt").write_text(text, encoding="utf-8")
    return root


def test_export_batchrun_import_then_the_same_command_runs_from_the_cache(
    server_4k, proxy: CountingProxy, tmp_path: Path
) -> None:
    root = _tree(tmp_path / "notes")
    # Greedy, one call at a time: the online answers and the runner's are the same tokens.
    command = ["section", str(root), "-p", "Say what happened", "--by", "file", "-t", "0"]
    command += ["--max-tokens", "24", "-j", "1", "-q"]
    online_dir = tmp_path / "online"
    online_dir.mkdir()
    online = run_cli(proxy.base_url, online_dir, *command)
    assert online.returncode == 0, online.stderr[-2000:]
    assert sum(path == CHAT for _, path in proxy.seen) == 5

    proxy.seen.clear()
    requests = tmp_path / "requests.jsonl"
    exported = run_cli(proxy.base_url, tmp_path, *command, "--batch", "--export", str(requests))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "exported 5 call(s)" in exported.stderr
    assert not any(path == CHAT for _, path in proxy.seen)  # planning may ask, never chat
    lines = [json.loads(x) for x in requests.read_text().splitlines()]
    assert len(lines) == 5 and {x["url"] for x in lines} == {CHAT}

    results = tmp_path / "results.jsonl"
    runner = [sys.executable, str(RUNNER), str(requests), str(results)]
    ran = subprocess.run(
        [*runner, "--base-url", server_4k.base_url, "--concurrency", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "5 of 5 request(s) answered" in ran.stdout

    imported = run_cli(proxy.base_url, tmp_path, "batch", "import", str(results))
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert "stored 5, failed 0, unknown 0" in imported.stderr

    proxy.seen.clear()
    again = run_cli(proxy.base_url, tmp_path, *command)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not any(path == CHAT for _, path in proxy.seen)  # zero chat requests
    assert again.stdout == online.stdout


def test_batch_list_on_llama_cpp_says_to_export(server_4k, tmp_path: Path) -> None:
    listed = run_cli(server_4k.base_url, tmp_path, "batch", "list")
    assert listed.returncode == 2
    assert "this endpoint has no Batch API; use --export/batch import" in listed.stderr
    status = run_cli(server_4k.base_url, tmp_path, "batch", "status", "batch_123")
    assert status.returncode == 2 and "no Batch API" in status.stderr
