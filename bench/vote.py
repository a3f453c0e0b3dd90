"""Early-stop row: `parallelize vote -n 15 --early-stop` against the loopback server, calls and wall
time beside the full 15, when all samples agree and when 80% do; the winner must be the full run's.

The server (tests/llmserver.py, in this process) answers sample i by its seed (attempt i sends
--seed + i), so both runs see the same answers whatever the order of arrival; the calls come from
its GET /_stats. Each run has its own empty cache, so nothing is served from an earlier one.

    python bench/vote.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from llmserver import LLMServer  # noqa: E402 - tests/llmserver.py, the loopback server

ENTRY = Path(sys.executable).with_name("parallelize")
N, SEED = 15, 100
PATTERN = r"ANSWER:\s*(\S+)"
CASES = {
    "all agree": ["Paris"] * N,
    "80% agree": ["Lyon" if i in (2, 7, 12) else "Paris" for i in range(N)],
}


def run(smoke: bool = False) -> list[dict]:
    """One row per case: calls and seconds with and without --early-stop, and the winners."""
    latency = 0.05 if smoke else 0.2
    rows = []
    with LLMServer() as llm, tempfile.TemporaryDirectory() as work:
        llm.latency = latency
        for name, said in CASES.items():
            llm.reset()
            llm.latency = latency
            llm.script(
                None, lambda body, said=said: f"Thinking.\nANSWER: {said[body['seed'] - SEED]}"
            )
            full = _vote(llm, Path(work) / f"{name}-full")
            early = _vote(llm, Path(work) / f"{name}-early", "--early-stop")
            rows.append(
                {
                    "workload": f"vote -n {N}, {name}",
                    "calls": early["calls"],
                    "calls without early stop": full["calls"],
                    "saved": early["doc"]["samples_saved"],
                    "wall_s": early["wall_s"],
                    "wall_s without": full["wall_s"],
                    "same winner": early["doc"]["winner"] == full["doc"]["winner"]
                    and early["doc"]["result"] == full["doc"]["result"],
                }
            )
    return rows


def _vote(llm: LLMServer, cache: Path, *extra: str) -> dict:
    """Run one vote as a user would (the installed entry point), and read the server's count."""
    llm.clear()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARALLELIZE_"))}
    env |= {
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "bench-key",
        "PARALLELIZE_CACHE_DIR": str(cache),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    args = [str(ENTRY), "vote", "Capital of France? End with ANSWER: <city>", "-n", str(N)]
    args += [
        "-s",
        "consensus",
        "--answer-pattern",
        PATTERN,
        "--seed",
        str(SEED),
        "-m",
        "test-model",
    ]
    started = time.monotonic()
    done = subprocess.run(
        [*args, *extra, "--format", "json", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"vote failed ({done.returncode}): {done.stderr.strip()}")
    with urllib.request.urlopen(llm.url + "/_stats", timeout=30) as reply:
        calls = json.load(reply)["requests"]
    return {"calls": calls, "wall_s": round(wall, 2), "doc": json.loads(done.stdout)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    for row in run(parser.parse_args().smoke):
        print(row)
