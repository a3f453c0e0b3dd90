"""Token counting row: the server's counter (llama.cpp `/tokenize`, as parallelize calls it)
against tiktoken on the same text, as throughput and a ratio.

The server counter is measured cold (no cached counts): one text at a time, and `count_many`
(concurrent requests, what planning uses). Text: the standard library's `email` package.

    python bench/counting.py [--smoke]
"""

from __future__ import annotations

import argparse
import email
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "realserver"))
import serve  # noqa: E402 - tools/realserver/serve.py: find_build, start_server

from parallelize.engine.client import ChatClient, Endpoint  # noqa: E402
from parallelize.inputs.tokens import get_counter, server_counter  # noqa: E402


def texts(smoke: bool) -> list[str]:
    files = sorted(Path(email.__file__).parent.rglob("*.py"))
    return [f.read_text("utf-8") for f in files[: 6 if smoke else None]]


def timed(count, corpus: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    total = count(corpus)
    return time.perf_counter() - started, total


def run(smoke: bool = False) -> list[dict]:
    """One row per counter: seconds, tokens, MB/s and speed relative to tiktoken."""
    build = serve.find_build()
    if build is None:
        return []
    corpus = texts(smoke)
    size = sum(len(t.encode()) for t in corpus) / 1e6
    local = get_counter("any-model", "cl100k")
    local.count("warm up")
    rows = []
    with serve.start_server(*build, slots=4, ctx_per_slot=4096) as srv:
        client = ChatClient(Endpoint(srv.base_url))
        fresh = lambda: server_counter(client.post_json, fallback=local)  # noqa: E731 - no cache
        cases = [
            ("tiktoken cl100k", lambda c: sum(map(local.count, c))),
            ("server, one at a time", lambda c: sum(map(fresh().count, c))),
            ("server, count_many", lambda c: sum(fresh().count_many(c))),
        ]
        base = None
        for name, count in cases:
            seconds, tokens = timed(count, corpus)
            base = base or seconds
            rows.append(
                {
                    "counter": name,
                    "files": len(corpus),
                    "MB": round(size, 2),
                    "tokens": tokens,
                    "seconds": round(seconds, 3),
                    "MB/s": round(size / seconds, 2),
                    "time vs tiktoken": f"{seconds / base:.1f}x",
                }
            )
        client.close()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    for row in run(parser.parse_args().smoke):
        print(row)
