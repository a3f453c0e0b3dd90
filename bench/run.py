"""`make bench`: the engine's workloads against the loopback server, each side its own process.

W1 throughput (1000 small files, 200 +/- 20 ms, -j 64) and W1 short run (200 files), W2 throttled
(300 prompts, a 600 rpm server with 10 requests of credit, -j 32, no --rpm), W3 faults (200
prompts, 10% 5xx, 2% dropped connections, -j 16) and the 50%-5xx storm, W5 stalls (500 prompts,
1% stalls ended by --timeout 2), W4 the W1 re-run on a warm cache; the full run adds a
ThreadPoolExecutor + openai SDK baseline. Rows with a floor also run bench/floor.py (interpreter
start-up plus a bare httpcore client sending the same requests at the same concurrency), so the
tool's own cost reads as wall / floor. `parallelize` runs as the installed entry point, timed from
launch to exit; the server (tests/llmserver.py) runs in its own process and its request log gives
the in-process window (first request in to last response out), request and 429 counts, on the
same monotonic clock. Rows from bench/chunking.py, bench/dryrun.py, bench/vote.py (and
bench/counting.py, bench/realserver.py with a llama.cpp build) follow.

    python bench/run.py [--smoke] [--json FILE]

Timings are reported, not gated (the machine is shared); the run fails only when an invariant
breaks: a prompt lost, outputs out of order, a non-zero exit, or a request on the warm re-run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "llmserver.py"
FLOOR = ROOT / "bench" / "floor.py"
ENTRY = Path(sys.executable).with_name("parallelize")
MODEL = "test-model"
LATENCY, JITTER = 0.2, 0.02
PROMPT = "Summarize this file in one line."

BASELINE = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from openai import OpenAI

root, concurrency = Path(sys.argv[1]), int(sys.argv[2])
client = OpenAI(max_retries=4)
files = sorted(root.iterdir())

def one(path):
    text = path.read_text()
    reply = client.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": "Summarize this file in one line.\\n\\n" + text}],
    )
    return reply.choices[0].message.content

with ThreadPoolExecutor(concurrency) as pool:
    outputs = list(pool.map(one, files))
sys.stdout.write("\\n\\n".join(outputs))
"""


@dataclass
class Server:
    """A loopback server process and its base URL."""

    process: subprocess.Popen
    base_url: str

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def stats(self) -> dict:
        with urllib.request.urlopen(self.root + "/_stats", timeout=30) as reply:
            return json.load(reply)

    def reset(self) -> None:
        request = urllib.request.Request(self.root + "/_reset", method="POST")
        urllib.request.urlopen(request, timeout=30).read()


@contextmanager
def server(**knobs: float) -> Iterator[Server]:
    """Start tests/llmserver.py with these knobs; stop it afterwards."""
    args = [sys.executable, str(SERVER), "--port", "0", "--seed", "7"]
    for name, value in knobs.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith("READY "):
            raise SystemExit(f"the loopback server did not start: {line!r}")
        yield Server(process, line.split()[1])
    finally:
        process.terminate()
        process.wait(timeout=30)


def make_files(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (directory / f"f{i:04d}.txt").write_text(f"file {i} MARKER-{i}-END\nsome small content\n")
    return directory


@dataclass
class Run:
    """One process: wall and CPU seconds, exit code, output."""

    started: float
    wall: float
    cpu: float
    code: int
    stdout: str
    stderr: str


def run_process(args: list[str], env: dict[str, str]) -> Run:
    """Run a command to completion; CPU seconds are the child's own (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(started, wall, cpu, done.returncode, done.stdout, done.stderr)


def lost_and_order(output: str, count: int) -> tuple[int, bool]:
    """Prompts whose answer is missing from the output, and whether the rest are in order."""
    positions = [output.find(f"MARKER-{i}-END") for i in range(count)]
    found = [p for p in positions if p >= 0]
    return count - len(found), found == sorted(found)


def environment(srv: Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARALLELIZE_"))}
    env |= {"OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": "bench-key"}
    return env | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def section_args(inputs: Path, cache: Path, concurrency: int, *extra: str) -> list[str]:
    return [
        str(ENTRY),
        "section",
        str(inputs),
        "--by",
        "file",
        "-j",
        str(concurrency),
        "-m",
        MODEL,
        "-p",
        PROMPT,
        "-q",
        "--cache-dir",
        str(cache),
        *extra,
    ]


def measure(name: str, srv: Server, args: list[str], count: int, ideal: float) -> dict:
    """Run one workload once and describe it from the process and the server's log."""
    srv.reset()
    run = run_process(args, environment(srv))
    stats = srv.stats()
    lost, ordered = lost_and_order(run.stdout, count)
    first, last = stats["first_start"], stats["last_end"]
    window = (last - first) if first is not None else 0.0
    return {
        "workload": name,
        "prompts": count,
        "wall_s": round(run.wall, 2),
        "window_s": round(window, 2),
        "ideal_s": round(ideal, 2),
        "ratio": round(run.wall / ideal, 3) if ideal else None,
        "window_ratio": round(window / ideal, 3) if ideal and window else None,
        "requests": stats["requests"],
        "other_requests": stats.get("other_requests", 0),
        "429s": stats["statuses"].get("429", 0),
        "lost": lost,
        "in_order": ordered,
        "cpu_s": round(run.cpu, 2),
        "first_request_s": round(first - run.started, 3) if first is not None else None,
        "exit": run.code,
    }


def with_floor(row: dict, srv: Server, inputs: Path, concurrency: int) -> dict:
    """Add the machine's floor for the same requests (bench/floor.py): interpreter start-up plus
    a bare httpcore client with free, instant retries; `over_floor` = wall / floor."""
    srv.reset()
    args = [sys.executable, str(FLOOR), srv.base_url, str(inputs), str(concurrency), MODEL, PROMPT]
    run = run_process(args, environment(srv))
    if run.code != 0:
        raise SystemExit(f"the floor script failed: {run.stderr[-500:]}")
    row["floor_s"] = round(run.wall, 2)
    row["floor_ratio"] = round(run.wall / row["ideal_s"], 3) if row["ideal_s"] else None
    row["over_floor"] = round(row["wall_s"] / run.wall, 3)
    return row


def interpreter_floor(row: dict) -> dict:
    """The floor of a run that needs no network: the interpreter starting and stopping."""
    floor = min(
        run_process([sys.executable, "-c", "pass"], dict(os.environ)).wall for _ in range(3)
    )
    row["floor_s"] = round(floor, 3)
    row["over_floor"] = round(row["wall_s"] / floor, 3)
    return row


def best(rows: list[dict]) -> dict:
    """The fastest of repeated runs (whole process), as the brief's gate asks."""
    return min(rows, key=lambda row: row["wall_s"])


def best_of_two(
    name: str,
    srv: Server,
    work: Path,
    inputs: Path,
    count: int,
    *extra: str,
    concurrency: int,
    ideal: float,
) -> dict:
    """A workload twice, each on a fresh cache; the faster run, with its floor."""
    tries = []
    for attempt in range(2):
        cache = work / f"cache-{name.split()[0]}-{count}-{attempt}"
        args = section_args(inputs, cache, concurrency, *extra)
        tries.append(measure(name, srv, args, count, ideal))
    return with_floor(best(tries), srv, inputs, concurrency)


def throughput(work: Path, *, smoke: bool) -> list[dict]:
    """W1 at 1000 and 200 prompts (best of two, fresh caches), W4 (warm), the baseline script."""
    count, concurrency = (256, 64) if smoke else (1000, 64)
    short = 64 if smoke else 200
    inputs = make_files(work / "w1", count)
    few = make_files(work / "w1-short", short)
    ideal = math.ceil(count / concurrency) * LATENCY
    rows = []
    with server(latency=LATENCY, jitter=JITTER) as srv:
        rows.append(
            best_of_two(
                "W1 throughput", srv, work, inputs, count, concurrency=concurrency, ideal=ideal
            )
        )
        short_ideal = math.ceil(short / concurrency) * LATENCY
        rows.append(
            best_of_two(
                "W1 short run", srv, work, few, short, concurrency=concurrency, ideal=short_ideal
            )
        )
        cache = work / f"cache-W1-{count}-1"
        warm = measure(
            "W4 warm re-run", srv, section_args(inputs, cache, concurrency), count, ideal
        )
        warm["ratio"] = warm["window_ratio"] = warm["ideal_s"] = None
        rows.append(interpreter_floor(warm))
        if not smoke:
            script = work / "baseline.py"
            script.write_text(BASELINE)
            args = [sys.executable, str(script), str(inputs), str(concurrency)]
            rows.append(measure("W1 baseline: threads + openai", srv, args, count, ideal))
    return rows


def throttled(work: Path, *, smoke: bool) -> dict:
    """W2: a server allowing `rpm` after 10 requests of credit; no --rpm given."""
    count, rpm, credit = (60, 1200, 10) if smoke else (300, 600, 10)
    inputs = make_files(work / "w2", count)
    ideal = (count - credit) / (rpm / 60)
    with server(latency=LATENCY, jitter=JITTER, rpm=rpm, burst=credit) as srv:
        args = section_args(inputs, work / "cache-w2", 32)
        return measure(f"W2 throttled ({rpm} rpm)", srv, args, count, ideal)


def faults(work: Path, *, smoke: bool) -> list[dict]:
    """W3: 10% 5xx and 2% dropped connections (best of two, with its floor); the 50%-5xx storm
    (requests per call and what is lost); W5: 1% stalls that the client's --timeout 2 ends."""
    count, concurrency = (64, 16) if smoke else (200, 16)
    inputs = make_files(work / "w3", count)
    ideal = math.ceil(count / concurrency) * LATENCY
    rows = []
    with server(latency=LATENCY, jitter=JITTER, error_rate=0.1, drop_rate=0.02) as srv:
        rows.append(
            best_of_two(
                "W3 faults (10% 5xx, 2% resets)",
                srv,
                work,
                inputs,
                count,
                concurrency=concurrency,
                ideal=ideal,
            )
        )
    with server(latency=LATENCY, jitter=JITTER, error_rate=0.5) as srv:
        args = section_args(inputs, work / "cache-storm", concurrency)
        storm = measure("W3 storm (50% 5xx)", srv, args, count, ideal)
        storm["requests_per_call"] = round(storm["requests"] / count, 2)
        storm["ratio"] = storm["window_ratio"] = None
        rows.append(storm)
    stalls, wide = (128, 64) if smoke else (500, 64)
    knobs = {"error_rate": 0.1, "drop_rate": 0.02, "stall_rate": 0.01, "stall_seconds": 30}
    stall_inputs = make_files(work / "w5", stalls)
    with server(latency=LATENCY, jitter=JITTER, **knobs) as srv:
        args = section_args(stall_inputs, work / "cache-w5", wide, "--timeout", "2")
        ideal = math.ceil(stalls / wide) * LATENCY
        rows.append(measure("W5 faults with stalls (1%, --timeout 2)", srv, args, stalls, ideal))
    return rows


def startup() -> dict:
    """Median seconds of `parallelize --help` and `--version` (5 runs each)."""
    env = dict(os.environ)
    result = {}
    for flag in ("--help", "--version"):
        times = [run_process([str(ENTRY), flag], env).wall for _ in range(5)]
        result[f"{flag} median_s"] = round(statistics.median(times), 3)
    return result


COLUMNS = [
    ("workload", "workload"),
    ("prompts", "N"),
    ("wall_s", "wall s"),
    ("ideal_s", "ideal s"),
    ("ratio", "ratio"),
    ("window_s", "window s"),
    ("window_ratio", "window ratio"),
    ("floor_s", "floor s"),
    ("floor_ratio", "floor ratio"),
    ("over_floor", "wall / floor"),
    ("requests", "requests"),
    ("other_requests", "other requests"),
    ("requests_per_call", "requests / call"),
    ("429s", "429s"),
    ("lost", "lost"),
    ("in_order", "in order"),
    ("cpu_s", "client CPU s"),
    ("first_request_s", "1st request s"),
]


def table(rows: list[dict], columns: list[tuple[str, str]] | None = None) -> str:
    """Rows as a Markdown table (every key when no columns are given)."""
    if columns is None:
        keys = list(dict.fromkeys(k for row in rows for k in row))
        columns = [(k, k) for k in keys]
    lines = ["| " + " | ".join(title for _, title in columns) + " |"]
    lines.append("|" + "|".join(" --- " for _ in columns) + "|")
    for row in rows:
        cells = ["-" if row.get(key) is None else str(row.get(key)) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def extra_rows(smoke: bool) -> list[tuple[str, list[dict]]]:
    """Rows of the other benchmark modules that are present."""
    found = []
    chunking = ROOT / "bench" / "chunking.py"
    if chunking.exists():
        found.append(("chunking (bench/chunking.py)", _load(chunking).run(smoke)))
    for name, title in (
        ("dryrun", "dry run speed"),
        ("vote", "early-stopping votes"),
        ("batch", "the Batch API at 10,000 prompts"),
        ("tools", "parallel tool calling"),
    ):
        module = ROOT / "bench" / f"{name}.py"
        if module.exists():
            found.append((f"{title} (bench/{name}.py)", _load(module).run(smoke)))
    counting = ROOT / "bench" / "counting.py"
    if counting.exists() and not smoke:
        rows = _load(counting).run(smoke)
        if rows:
            found.append(
                ("token counting: the server's counter vs tiktoken (bench/counting.py)", rows)
            )
    realserver = ROOT / "bench" / "realserver.py"
    if realserver.exists() and not smoke:
        module = _load(realserver)
        if module.serve.find_build() is not None:
            found.append(("real llama.cpp (bench/realserver.py)", module.run(smoke)))
        else:
            print("(bench/realserver.py skipped: no llama-server build; see make test-real)")
    return found


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small, fast versions (CI)")
    parser.add_argument("--json", type=Path, help="also write every row to this JSON file")
    args = parser.parse_args()
    if not ENTRY.exists():
        raise SystemExit(f"{ENTRY} not found: run `make install` first")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="parallelize-bench-") as tmp:
        work = Path(tmp)
        rows = throughput(work, smoke=args.smoke)
        rows[2:2] = [throttled(work, smoke=args.smoke), *faults(work, smoke=args.smoke)]
    print(f"engine workloads ({'smoke' if args.smoke else 'full'}, {os.cpu_count()} CPUs)")
    print(table(rows, COLUMNS))
    boot = startup()
    print("\nstart-up")
    print(table([boot]))
    report = {"engine": rows, "startup": boot}
    for title, extra in extra_rows(args.smoke):
        print(f"\n{title}")
        print(table(extra))
        report[title] = extra
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    broken = broken_rows(rows)
    if broken:
        raise SystemExit("benchmark invariants broken: " + "; ".join(broken))


def broken_rows(rows: list[dict]) -> list[str]:
    """What must hold whatever the machine's speed: nothing lost (the storm aside: what it loses
    is what it measures), order kept, and W4 makes no request of any kind."""
    problems = []
    for row in rows:
        name = row["workload"]
        storm = "storm" in name
        if (row["lost"] and not storm) or not row["in_order"] or (row["exit"] and not storm):
            problems.append(
                f"{name}: lost {row['lost']}, in order {row['in_order']}, exit {row['exit']}"
            )
        if name.startswith("W4") and (row["requests"] or row["other_requests"]):
            problems.append(
                f"{name}: {row['requests']} chat and {row['other_requests']} other requests"
                " on a warm cache"
            )
    return problems


if __name__ == "__main__":
    main()
