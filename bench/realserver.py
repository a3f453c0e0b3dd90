"""Real-server row: the same section job through `parallelize` and through a plain
asyncio + AsyncOpenAI script, against a real llama.cpp server, alternating, median of N runs.

Start-up accounting: both sides are whole processes timed from launch to exit (imports,
reading the inputs and building requests included), sending byte-identical requests.

    python bench/realserver.py [--smoke] [--runs 5] [--chunks 64] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "realserver"))
import serve  # noqa: E402 - tools/realserver/serve.py: find_build, start_server

MAX_TOKENS = 16

PLAIN_SCRIPT = """
import asyncio, json, sys
from openai import AsyncOpenAI

async def main(plan_path, base_url, concurrency):
    plan = json.load(open(plan_path))
    client = AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(task):
        async with gate:
            reply = await client.chat.completions.create(
                model=task["model"], messages=task["messages"], max_tokens=task["max_tokens"]
            )
            return reply.choices[0].message.content or ""

    outputs = await asyncio.gather(*(one(t) for t in plan))
    sys.stdout.write("\\n\\n".join(outputs))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def make_inputs(directory: Path, chunks: int) -> None:
    """`chunks` small source-like files, one chunk each with --by file."""
    for i in range(chunks):
        lines = [f"def function_{i}_{j}(x):\n    return x * {j} + {i}\n" for j in range(6)]
        (directory / f"module_{i:03d}.py").write_text("".join(lines), encoding="utf-8")


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def run(
    smoke: bool = False, *, runs: int = 5, chunks: int = 64, concurrency: int = 8
) -> list[dict]:
    """Measure both sides against one real server; returns one result row."""
    build = serve.find_build()
    if build is None:
        raise SystemExit("no llama-server build: run `bash tools/realserver/build.sh` first")
    if smoke:
        runs, chunks = 3, 16
    parallelize = str(Path(sys.executable).with_name("parallelize"))
    with (
        serve.start_server(*build, slots=concurrency) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        work = Path(tmp)
        (work / "src").mkdir()
        make_inputs(work / "src", chunks)
        env = {
            **os.environ,
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "none",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        base = [
            parallelize,
            "section",
            str(work / "src"),
            "--by",
            "file",
            "-m",
            server.alias,
            "--prompt",
            "Summarize:",
            "--max-tokens",
            str(MAX_TOKENS),
            "-j",
            str(concurrency),
            "--quiet",
        ]
        plan = subprocess.run(
            [*base, "--dry-run", "--format", "json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        tasks = [
            {
                "model": t.get("model", server.alias),
                "messages": t["messages"],
                "max_tokens": MAX_TOKENS,
            }
            for t in json.loads(plan.stdout)["plan"]
        ]
        (work / "plan.json").write_text(json.dumps(tasks))
        (work / "plain.py").write_text(PLAIN_SCRIPT)
        ours_cmd = [*base, "--no-cache"] if _has_flag(parallelize, "--no-cache") else base
        plain_cmd = [
            sys.executable,
            str(work / "plain.py"),
            str(work / "plan.json"),
            server.base_url,
            str(concurrency),
        ]
        ours, plain = [], []
        timed(plain_cmd, env)  # warm the server and the OS file cache once
        for _ in range(runs):
            ours.append(timed(ours_cmd, env))
            plain.append(timed(plain_cmd, env))
    ours_median, plain_median = statistics.median(ours), statistics.median(plain)
    return [
        {
            "workload": f"real llama.cpp, {chunks} chunks, c={concurrency}",
            "parallelize_s": round(ours_median, 3),
            "plain_asyncio_openai_s": round(plain_median, 3),
            "ratio": round(ours_median / plain_median, 3),
            "runs": runs,
        }
    ]


def _has_flag(executable: str, flag: str) -> bool:
    help_text = subprocess.run([executable, "section", "--help"], capture_output=True, text=True)
    return flag in help_text.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    for row in run(args.smoke, runs=args.runs, chunks=args.chunks, concurrency=args.concurrency):
        print("  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
