"""Ctrl-C and SIGTERM on the real entry point: stop, keep what finished, resume with the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from llmserver import LLMServer

FILES = 16
WAIT_LIMIT = 30.0


def start(entry_point: str, root: Path, cache: Path) -> tuple[list[str], dict[str, str]]:
    args = [entry_point, "section", str(root), "--by", "file", "-j", "4", "-p", "Summarize"]
    args += ["-m", "test-model", "--cache-dir", str(cache)]
    return args, dict(os.environ)


def wait_for_requests(llm: LLMServer, count: int) -> None:
    """Poll the server's log until `count` requests finished (a limit, not an assertion)."""
    limit = time.monotonic() + WAIT_LIMIT
    while llm.count() < count and time.monotonic() < limit:
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_then_resume_makes_only_the_missing_calls(
    llm: LLMServer, entry_point: str, make_tree, tmp_path: Path, signum: int
) -> None:
    llm.latency = 0.2
    root = make_tree({f"f{i:02d}.txt": f"MARKER-{i}\n" for i in range(FILES)})
    args, env = start(entry_point, root, tmp_path / "cache")
    run = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_requests(llm, 4)
    run.send_signal(signum)
    stdout, stderr = run.communicate(timeout=WAIT_LIMIT)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert "stopping: no new calls" in stderr
    assert "interrupted:" in stderr and "Run the same command again to resume" in stderr
    answered = sum(1 for r in llm.requests if r.status == 200)
    assert 4 <= answered < FILES
    llm.clear()
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=WAIT_LIMIT)
    assert again.returncode == 0, again.stderr
    assert len(llm.requests) == FILES - answered  # exactly the missing calls
    assert all(f"MARKER-{i}" in again.stdout for i in range(FILES))
    assert f"({answered} cached)" in again.stderr
