"""Parallel tool calling: 100 tasks, each answering after one round of 3 tool calls of 200 ms.

At concurrency 16 against the loopback server (tests/llmserver.py, in this process) with 200 ms
of latency, every task makes two requests (the one that asks for the tools, the one that answers)
and runs its three calls at once in between: ideal = ceil(100 / 16) x (2 x 0.2 + 0.2) s. The
tool is a declared command that sleeps 200 ms, so its process start-up is part of what is
measured. Target: wall / ideal <= 1.3.

    python bench/tools.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from llmserver import LLMServer  # noqa: E402 - tests/llmserver.py, the loopback server

ENTRY = Path(sys.executable).with_name("parallelize")
TASKS, CONCURRENCY, CALLS, TOOL_S = 100, 16, 3, 0.2
#: The tool: coreutils sleep, a process as a declared command is (it takes fractions of seconds).
SLEEP = ["sleep", str(TOOL_S)]


def run(smoke: bool = False) -> list[dict]:
    """One row: wall time of the tool workload beside its ideal, and their ratio."""
    tasks = 20 if smoke else TASKS
    latency = 0.2
    with LLMServer() as llm, tempfile.TemporaryDirectory() as work:
        llm.latency = latency

        def asks(body: dict) -> bool:
            return body["messages"][-1]["role"] == "user"

        calls = [{"function": {"name": "nap", "arguments": {}}} for _ in range(CALLS)]
        llm.script(asks, tool_calls=calls)
        llm.script(None, "done")
        root = Path(work) / "inputs"
        root.mkdir()
        for i in range(tasks):
            (root / f"f{i:03}.txt").write_text(f"file {i}\n")
        recipe = Path(work) / "recipe.yaml"
        recipe.write_text(
            json.dumps(
                {
                    "prompt": "{{ input }}",
                    "chunking": {"by": "file"},
                    "tools": [{"name": "nap", "description": "nap", "command": SLEEP}],
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARALLELIZE_"))}
        env |= {
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": "bench-key",
            "PARALLELIZE_CACHE_DIR": str(Path(work) / "cache"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        args = [str(ENTRY), "section", str(root), "--recipe", str(recipe), "-m", "test-model"]
        args += ["-j", str(CONCURRENCY), "--no-cache", "--format", "json", "-q"]
        started = time.monotonic()
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"tools bench failed ({done.returncode}): {done.stderr.strip()}")
        doc = json.loads(done.stdout)
        made = sum(len(t.get("tool_calls", [])) for t in doc["tasks"])
        requests = llm.count()
    ideal = math.ceil(tasks / CONCURRENCY) * (2 * latency + TOOL_S)
    return [
        {
            "workload": f"{tasks} tasks x {CALLS} tool calls of {TOOL_S:g} s, -j {CONCURRENCY}",
            "requests": requests,
            "tool calls": made,
            "wall_s": round(wall, 2),
            "ideal_s": round(ideal, 2),
            "ratio": round(wall / ideal, 2),
            "target": "<= 1.3",
        }
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    for row in run(parser.parse_args().smoke):
        print(row)
