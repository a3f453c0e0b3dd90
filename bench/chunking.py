"""Chunking benchmark: the input pipeline over the running interpreter's standard library.

Measured in one run, over the same files and the same text, best of N (the machine is shared):
  raw read         reading the bytes of the files the pipeline keeps
  plain tiktoken   len(encode(text)) of every file, one thread, nothing else
  pipeline         discovery + decoding + secret scan + token counting (threads) + chunking
Token totals of the pipeline and of plain tiktoken must be equal. Also reported: peak memory of
one pipeline run (tracemalloc, Python allocations) and how many chunks one edited file changes
(the file grows by 10% or by 50%, at nine places in the tree) for each way to chunk.

    python bench/chunking.py [--smoke] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallelize.inputs.read import Discovery, Document, InputOptions, discover
from parallelize.inputs.tokens import get_counter
from parallelize.plan.chunking import Costs, chunk_budget, chunk_count, chunk_files

#: The budget the packing modes use (the default chunk size without flags).
BUDGET = 12_000
#: --chunks N for the balanced mode.
CHUNKS = 64
#: Parts of the standard library the smoke run reads (a few MB, a few seconds).
SMOKE_PACKAGES = ("json", "email", "asyncio", "importlib")
#: Where in the tree (fraction of the files) the one-file edits happen, and by how much the
#: file grows (a function added; half the file again).
EDIT_POSITIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
EDIT_GROWTH = (0.1, 0.5)
#: Folders of the interpreter's library that are not the standard library.
NOT_STDLIB = ("site-packages/", "dist-packages/")


def corpus(smoke: bool) -> list[str]:
    """The paths to read: the whole standard library, or a few packages of it."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if smoke:
        return [str(root / name) for name in SMOKE_PACKAGES if (root / name).is_dir()]
    return [str(root)]


def pipeline(paths: list[str], counter: Any) -> tuple[Discovery, int]:
    """Discovery, decoding, secret scan and counting, then chunking: what `section` does."""
    found = discover(paths, counter=counter, options=InputOptions(exclude=NOT_STDLIB))
    plan = chunk_budget(found.documents, BUDGET, counter, costs=Costs(counter))
    return found, len(plan.chunks)


def best(repeat: int, *steps: Callable[[], Any]) -> list[tuple[float, float, Any]]:
    """Each step `repeat` times in turn: best wall time, that run's CPU time, last result."""
    times = [(float("inf"), 0.0)] * len(steps)
    results: list[Any] = [None] * len(steps)
    for _ in range(repeat):
        for i, step in enumerate(steps):
            started, cpu = time.perf_counter(), time.process_time()
            results[i] = step()
            took = (time.perf_counter() - started, time.process_time() - cpu)
            times[i] = min(times[i], took)
    return [(wall, cpu, result) for (wall, cpu), result in zip(times, results, strict=True)]


def changed_by_one_edit(docs: list[Document], counter: Any, growth: float) -> dict[str, str]:
    """Chunks whose id is new after one file grows: mean and worst over a few places in the tree."""
    costs = Costs(counter)
    modes: dict[str, Callable[[list[Document]], list[str]]] = {
        f"--chunk-tokens {BUDGET} (stable cuts)": lambda d: [
            c.id for c in chunk_budget(d, BUDGET, counter, costs=costs).chunks
        ],
        f"greedy packing, {BUDGET} (reference)": lambda d: [
            c.id for c in chunk_budget(d, BUDGET, counter, costs=costs, min_fill=1.0).chunks
        ],
        f"--chunks {CHUNKS}": lambda d: [
            c.id for c in chunk_count(d, CHUNKS, counter, costs=costs).chunks
        ],
        "--by file": lambda d: [c.id for c in chunk_files(d, BUDGET, counter, costs=costs).chunks],
    }
    edits = [edited_tree(docs, counter, where, growth) for where in EDIT_POSITIONS]
    out = {}
    for name, ids in modes.items():
        before = set(ids(docs))
        changed = [len(set(ids(tree)) - before) for tree in edits]
        out[name] = (
            f"mean {sum(changed) / len(changed):.1f}, worst {max(changed)} "
            f"(of {len(before)}; {len(edits)} edits)"
        )
    return out


def edited_tree(docs: list[Document], counter: Any, where: float, growth: float) -> list[Document]:
    """The tree with one mid-sized file, about `where` of the way through, grown by `growth`."""
    start = int(len(docs) * where)
    index = next((i for i in range(start, len(docs)) if 500 < docs[i].tokens < BUDGET // 2), start)
    doc = docs[index]
    grown = doc.text + "\n# edited\n" + doc.text[: int(len(doc.text) * growth)]
    return [*docs[:index], Document(doc.path, grown, counter.count(grown)), *docs[index + 1 :]]


def run(smoke: bool, repeat: int | None = None) -> list[dict[str, Any]]:
    """Measure everything once per repeat and return the result rows."""
    repeat = repeat or (1 if smoke else 3)
    counter = get_counter(tokenizer="o200k")
    paths = corpus(smoke)
    found, _ = pipeline(paths, counter)  # warm the page cache; the file list for the others
    docs = found.documents
    size = sum(len(d.text.encode("utf-8", "surrogatepass")) for d in docs)
    files = [d.path for d in docs]

    def read_raw() -> int:
        total = 0
        for path in files:
            with open(path, "rb") as handle:
                total += len(handle.read())
        return total

    if counter.exact:
        import tiktoken

        encoding = tiktoken.get_encoding(counter.name)  # loaded before the clock starts

        def plain() -> int:
            return sum(len(encoding.encode(d.text, disallowed_special=())) for d in docs)
    else:

        def plain() -> int:
            return sum(counter.count(d.text) for d in docs)

    (t_read, c_read, _), (t_plain, c_plain, plain_tokens), (t_pipe, c_pipe, piped_run) = best(
        repeat, read_raw, plain, lambda: pipeline(paths, counter)
    )
    piped, n_chunks = piped_run
    tracemalloc.start()
    pipeline(paths, counter)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mb = size / 1e6
    common = {"files": len(docs), "mb": round(mb, 1), "counter": counter.name}
    rows = [
        {**common, "step": "raw read", "seconds": t_read, "cpu_s": c_read, "mb_s": mb / t_read},
        {
            **common,
            "step": "plain tiktoken, 1 thread" if counter.exact else "plain estimate, 1 thread",
            "seconds": t_plain,
            "cpu_s": c_plain,
            "mb_s": mb / t_plain,
            "tokens": plain_tokens,
        },
        {
            **common,
            "step": "pipeline (discover+decode+scan+count+chunk)",
            "seconds": t_pipe,
            "cpu_s": c_pipe,
            "mb_s": mb / t_pipe,
            "tokens": piped.tokens,
            "chunks": n_chunks,
            "tokens_match": piped.tokens == plain_tokens,
            "peak_mb": peak / 1e6,
            "skipped": sum(len(v) for v in piped.skipped.values()),
            "secrets": len(piped.findings),
        },
    ]
    for row in rows:
        row["seconds"] = round(row["seconds"], 3)
        row["cpu_s"] = round(row["cpu_s"], 2)
        row["mb_s"] = round(row["mb_s"], 1)
    rows[-1]["peak_mb"] = round(rows[-1]["peak_mb"], 1)
    for growth in EDIT_GROWTH:
        for mode, changed in changed_by_one_edit(docs, counter, growth).items():
            step = f"edit (+{growth:.0%}): {mode}"
            rows.append({**common, "step": step, "changed": changed})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table."""
    first = rows[0]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"corpus: {first['files']} files, {first['mb']} MB of text "
        f"(standard library of Python {sys.version.split()[0]}); counter: {first['counter']}"
        f"; {os.cpu_count()} CPUs, load average {load} (the machine is shared)",
        f"{'step':<52} {'seconds':>8} {'CPU s':>6} {'MB/s':>7}  notes",
    ]
    for row in rows:
        if "changed" in row:
            lines.append(f"{row['step']:<52} {'':>8} {'':>6} {'':>7}  changed: {row['changed']}")
            continue
        notes = []
        if "tokens" in row:
            notes.append(f"{row['tokens']:,} tokens")
        if "chunks" in row:
            notes += [
                f"{row['chunks']} chunks",
                "totals match" if row["tokens_match"] else "TOTALS DIFFER",
                f"peak {row['peak_mb']:.0f} MB",
                f"{row['skipped']} skipped, {row['secrets']} secrets redacted",
            ]
        lines.append(
            f"{row['step']:<52} {row['seconds']:>8.2f} {row['cpu_s']:>6.2f} {row['mb_s']:>7.1f}"
            f"  {', '.join(notes)}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few packages, one repeat")
    parser.add_argument("--repeat", type=int, default=None, help="runs per step (best is kept)")
    args = parser.parse_args()
    rows = run(args.smoke, args.repeat)
    print(table(rows))
    if not all(r.get("tokens_match", True) for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
