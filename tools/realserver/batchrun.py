#!/usr/bin/env python3
"""Run a Batch API input file against a server without a Batch API (stdlib only).

llama.cpp, vLLM or Ollama answer /v1/chat/completions but not /v1/batches. This runner stands in
for the provider: it posts each line of a batch input JSONL (what
`parallelize section|vote ... --batch --export FILE` writes) to the server and writes the output
JSONL the Batch API would, which `parallelize batch import OUTPUT` reads into the call cache::

    python tools/realserver/batchrun.py requests.jsonl results.jsonl \
        --base-url http://127.0.0.1:8089/v1 --concurrency 4

Each output line is `{id, custom_id, response: {status_code, request_id, body}, error}`, written
in the order the replies come (as the Batch API does: the order is arbitrary). A request that
gets no reply has `response: null` and an `error` object instead. Exit 0 when every line was
answered with 200, 1 when some were not (their lines are still written), 2 on bad input.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: Bounds on what is read: a batch input file holds at most 50,000 lines and 200 MB.
MAX_LINES = 50_000
MAX_LINE_BYTES = 16 * 1024 * 1024
#: Seconds one request may take (a tiny model on 2 cores answers within a minute).
DEFAULT_TIMEOUT = 600.0


def read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, request line) for each non-blank line; exits 2 on a line that is not one."""
    with path.open("rb") as handle:
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), 1):
            if number > MAX_LINES:
                sys.exit(f"{path}: more than {MAX_LINES:,} lines (a batch file's limit)")
            if len(raw) > MAX_LINE_BYTES:
                sys.exit(f"{path}:{number}: a line longer than {MAX_LINE_BYTES:,} bytes")
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError as exc:
                sys.exit(f"{path}:{number}: not JSON: {exc}")
            if not (
                isinstance(line, dict)
                and isinstance(line.get("custom_id"), str)
                and line.get("method") == "POST"
                and isinstance(line.get("url"), str)
                and isinstance(line.get("body"), dict)
            ):
                sys.exit(
                    f"{path}:{number}: not a batch request line (custom_id, method, url, body)"
                )
            yield number, line


def post(root: str, line: dict[str, Any], key: str | None, timeout: float) -> dict[str, Any]:
    """One request line sent; its output line (the Batch API's shape)."""
    number = line["_number"]
    data = json.dumps(line["body"]).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(f"{root}{line['url']}", data=data, headers=headers)
    out: dict[str, Any] = {"id": f"batch_req_{number}", "custom_id": line["custom_id"]}
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, content, request_id = (
                reply.status,
                reply.read(),
                reply.headers.get("X-Request-Id"),
            )
    except urllib.error.HTTPError as exc:
        status, content, request_id = exc.code, exc.read(), exc.headers.get("X-Request-Id")
    except (OSError, ValueError) as exc:  # no reply at all: the Batch API's error object
        return {**out, "response": None, "error": {"code": "no_reply", "message": str(exc)}}
    try:
        body = json.loads(content)
    except ValueError:
        body = {"error": {"message": content[:2000].decode("utf-8", "replace")}}
    response = {"status_code": status, "request_id": request_id or f"req_{number}", "body": body}
    return {**out, "response": response, "error": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="the batch input JSONL (--export FILE)")
    parser.add_argument("output", type=Path, help="where to write the output JSONL")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"), help="…/v1")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = parser.parse_args(argv)
    if not args.base_url:
        parser.error("--base-url (or OPENAI_BASE_URL) is required")
    parts = urlsplit(args.base_url)
    root = f"{parts.scheme}://{parts.netloc}"  # each line's url is /v1/chat/completions
    key = os.environ.get("OPENAI_API_KEY")
    lines = [{**line, "_number": n} for n, line in read_lines(args.input)]
    failed = 0
    workers = max(1, args.concurrency)
    with (
        args.output.open("w", encoding="utf-8") as sink,
        concurrent.futures.ThreadPoolExecutor(workers) as pool,
    ):
        futures = [pool.submit(post, root, line, key, args.timeout) for line in lines]
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            response = result["response"]
            failed += response is None or response["status_code"] != 200
            sink.write(json.dumps(result, ensure_ascii=False) + "\n")
    print(f"{len(lines) - failed} of {len(lines)} request(s) answered -> {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
