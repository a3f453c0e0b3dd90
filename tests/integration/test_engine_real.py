"""Cache and resume against a real llama.cpp server behave as against the loopback server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

MODEL = "tiny-llama"


def make_inputs(root: Path, files: int) -> Path:
    root.mkdir()
    for i in range(files):
        (root / f"f{i:03d}.py").write_text(f"def f{i}():\n    return {i}\n", encoding="utf-8")
    return root


def command(root: Path, *extra: str) -> list[str]:
    parallelize = str(Path(sys.executable).with_name("parallelize"))
    return [parallelize, "section", str(root), "--by", "file", "-m", MODEL, *extra]


def environment(real_server, cache: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "OPENAI_BASE_URL": real_server.base_url,
        "PARALLELIZE_CACHE_DIR": str(cache),
        "NO_PROXY": "127.0.0.1,localhost",
    }


def fresh_calls(stdout: str) -> int:
    return sum(1 for task in json.loads(stdout)["tasks"] if not task["cached"])


def test_a_rerun_is_served_from_the_cache(real_server, tmp_path: Path) -> None:
    root = make_inputs(tmp_path / "src", 6)
    env = environment(real_server, tmp_path / "cache")
    args = command(root, "--max-tokens", "8", "--format", "json", "-q")
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert fresh_calls(first.stdout) == 6 and fresh_calls(again.stdout) == 0
    assert json.loads(first.stdout)["result"] == json.loads(again.stdout)["result"]


def test_sigint_then_rerun_makes_only_the_missing_calls(real_server, tmp_path: Path) -> None:
    files, concurrency = 40, 2
    root = make_inputs(tmp_path / "src", files)
    env = environment(real_server, tmp_path / "cache")
    slow = ("--max-tokens", "96", "-j", str(concurrency))
    run = subprocess.Popen(
        command(root, *slow), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = []
    for line in run.stderr:  # interrupt once some calls have finished, mid-run
        seen.append(line)
        if sum("[done]" in s for s in seen) >= 3:
            break
    run.send_signal(signal.SIGINT)
    _, rest = run.communicate(timeout=60)
    stderr = "".join(seen) + rest
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr and "resume" in stderr
    finished = stderr.count("[done]")
    assert 0 < finished < files
    again = subprocess.run(
        command(root, *slow, "--format", "json", "-q"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    made = fresh_calls(again.stdout)
    assert files - finished - concurrency <= made <= files - finished
