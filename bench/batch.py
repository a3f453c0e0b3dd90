"""Batch row: 10,000 small prompts through the loopback Batch API fake (`section --by file
--batch`), the client's peak memory and CPU beside the fake server's own processing time.

The fake (tests/batchserver.py, in this process) answers each batch at its third poll; the
client is the installed entry point, measured with wait4 on its process (its own ru_maxrss and
user+system CPU). Bounds: peak memory <= 200 MB and client CPU <= 10 s.

    python bench/batch.py [--smoke]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from batchserver import BatchServer  # noqa: E402 - tests/batchserver.py, the loopback fake

ENTRY = Path(sys.executable).with_name("parallelize")
PROMPTS = 10_000
MAX_RSS_MB = 200
MAX_CPU_S = 10.0


def run_measured(args: list[str], env: dict[str, str]) -> tuple[int, resource.struct_rusage, str]:
    """Run the client and read ITS resource use (wait4): RUSAGE_CHILDREN's peak memory is the
    largest of every child this process ever waited for (in `make bench`, the dry run over the
    standard library), not this one's."""
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err)
        watchdog = threading.Timer(600, process.kill)  # a hung run ends the benchmark
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return process.returncode, usage, err.read().decode(errors="replace")


def run(smoke: bool = False) -> list[dict]:
    """One row: prompts, wall time, client CPU and peak memory, server time, bounds met."""
    prompts = 500 if smoke else PROMPTS
    with BatchServer() as fake, tempfile.TemporaryDirectory() as work:
        tree = Path(work) / "inputs"
        tree.mkdir()
        for i in range(prompts):
            (tree / f"f{i:05d}.txt").write_text(f"item {i}: say something short\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARALLELIZE_"))}
        env |= {
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "bench-key",
            "PARALLELIZE_CACHE_DIR": str(Path(work) / "cache"),
            "PARALLELIZE_BATCH_POLL": "0.2",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        args = [str(ENTRY), "section", str(tree), "--by", "file", "-m", "test-model"]
        args += ["-p", "Summarize.", "--batch", "-q", "-o", str(Path(work) / "out.txt")]
        started = time.monotonic()
        code, usage, stderr = run_measured(args, env)
        wall = time.monotonic() - started
        if code != 0:
            raise SystemExit(f"batch run failed ({code}): {stderr.strip()[-500:]}")
        lines = len(fake.submitted_lines())
        cpu = usage.ru_utime + usage.ru_stime
        rss_mb = usage.ru_maxrss / 1024  # KiB on Linux
        return [
            {
                "workload": f"section --batch, {prompts:,} prompts",
                "lines submitted": lines,
                "batches": len(fake.batches),
                "wall_s": round(wall, 2),
                "client cpu_s": round(cpu, 2),
                "client peak MB": round(rss_mb, 1),
                "server processing_s": round(fake.processing_seconds, 2),
                "bounds met": cpu <= MAX_CPU_S and rss_mb <= MAX_RSS_MB and lines == prompts,
            }
        ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    for row in run(parser.parse_args().smoke):
        print(row)
