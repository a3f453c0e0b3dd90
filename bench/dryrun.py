"""Dry-run benchmark: `parallelize section STDLIB --dry-run --tokenizer o200k` as a process of the
installed entry point, beside plain single-thread tiktoken over the same texts, in one run.

The CLI plans locally (no endpoint configured), with a fresh cache directory each time, so it
reads, scans, counts (on all cores), chunks, builds every request and estimates their tokens
from cold. Plain tiktoken is `len(encoding.encode(text))` of every text the CLI sends, one
thread, encoder loaded before the clock starts. Both are timed best of N, alternately (the
machine is shared); the row fails when their token totals differ.

    python bench/dryrun.py [--smoke] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parallelize.inputs.read import InputOptions, discover  # noqa: E402 - after sys.path
from parallelize.inputs.tokens import get_counter  # noqa: E402

ENTRY = Path(sys.executable).with_name("parallelize")
#: Parts of the standard library the smoke run reads.
SMOKE_PACKAGES = ("json", "email", "asyncio", "importlib")
#: Folders of the interpreter's library that are not the standard library.
NOT_STDLIB = ("site-packages/", "dist-packages/")
PROMPT = "Summarize this code."
#: What the text plan says: its tasks, the input's tokens, the estimate's prompt tokens.
PLAN_LINES = {
    "tasks": r"^plan: ([\d,]+) section task",
    "tokens": r"^inputs: .*?([\d,]+) tokens \(",
    "estimate_in": r"^estimate: ([\d,]+) tokens in",
}


def corpus(smoke: bool) -> list[str]:
    """The paths to read: the whole standard library, or a few packages of it."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if smoke:
        return [str(root / name) for name in SMOKE_PACKAGES if (root / name).is_dir()]
    return [str(root)]


def dry_run(paths: list[str], cache: Path) -> tuple[float, dict[str, int]]:
    """One CLI dry run (the text plan, as a person reads it): its wall time (launch to exit),
    and the tasks, input tokens and estimated prompt tokens it printed."""
    args = [str(ENTRY), "section", *paths, "--dry-run", "--tokenizer", "o200k", "-p", PROMPT]
    for pattern in NOT_STDLIB:
        args += ["--exclude", pattern]
    args += ["--cache-dir", str(cache)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARALLELIZE_"))}
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the dry run failed ({done.returncode}): {done.stderr[-2000:]}")
    found = {}
    for key, pattern in PLAN_LINES.items():
        match = re.search(pattern, done.stdout, re.MULTILINE)
        found[key] = int(match.group(1).replace(",", "")) if match else -1
    return wall, found


def run(smoke: bool, repeat: int | None = None) -> list[dict[str, Any]]:
    """The dry run and plain tiktoken over the same texts: MB/s each and their ratio."""
    if not ENTRY.exists():
        return []
    repeat = repeat or (1 if smoke else 3)
    paths = corpus(smoke)
    counter = get_counter(tokenizer="o200k")
    if not counter.exact:  # no tiktoken encoding (offline): nothing to compare with
        return []
    found = discover(paths, counter=counter, options=InputOptions(exclude=NOT_STDLIB))
    texts = [doc.text for doc in found.documents]
    size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
    import tiktoken

    encoding = tiktoken.get_encoding(counter.name)
    encoding.encode("warm up")
    plain_best = cli_best = float("inf")
    plain_tokens = 0
    report: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="parallelize-dryrun-") as tmp:
        for attempt in range(repeat):
            wall, report = dry_run(paths, Path(tmp) / f"cache-{attempt}")
            cli_best = min(cli_best, wall)
            started = time.perf_counter()
            plain_tokens = sum(len(encoding.encode(t, disallowed_special=())) for t in texts)
            plain_best = min(plain_best, time.perf_counter() - started)
    common = {"files": len(texts), "mb": round(size, 1), "counter": counter.name}
    return [
        {
            **common,
            "step": "plain tiktoken, 1 thread",
            "seconds": round(plain_best, 2),
            "mb_s": round(size / plain_best, 1),
            "tokens": plain_tokens,
        },
        {
            **common,
            "step": "CLI --dry-run --tokenizer o200k (whole process)",
            "seconds": round(cli_best, 2),
            "mb_s": round(size / cli_best, 1),
            "tokens": report["tokens"],
            "tokens_match": report["tokens"] == plain_tokens,
            "tasks": report["tasks"],
            "estimate_in": report["estimate_in"],
            "vs_plain": round(plain_best / cli_best, 2),
        },
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table."""
    first = rows[0]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"corpus: {first['files']} files, {first['mb']} MB (standard library of Python "
        f"{sys.version.split()[0]}); {os.cpu_count()} CPUs, load average {load}",
        f"{'step':<50} {'seconds':>8} {'MB/s':>7}  notes",
    ]
    for row in rows:
        notes = [f"{row['tokens']:,} tokens"]
        if "vs_plain" in row:
            match = "totals match" if row["tokens_match"] else "TOTALS DIFFER"
            notes += [match, f"{row['tasks']} tasks", f"{row['vs_plain']}x plain tiktoken"]
        lines.append(
            f"{row['step']:<50} {row['seconds']:>8.2f} {row['mb_s']:>7.1f}  {', '.join(notes)}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few packages, one repeat")
    parser.add_argument("--repeat", type=int, default=None, help="runs of each (best is kept)")
    args = parser.parse_args()
    rows = run(args.smoke, args.repeat)
    if not rows:
        raise SystemExit(f"nothing measured: {ENTRY} or the o200k encoding is missing")
    print(table(rows))
    if not all(r.get("tokens_match", True) for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
