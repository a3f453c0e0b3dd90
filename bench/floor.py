"""The machine's floor for a workload: interpreter start-up plus a bare httpcore client.

    python bench/floor.py BASE_URL DIR CONCURRENCY MODEL PROMPT

It sends the request `parallelize section DIR --by file` would send for each file (one user
message: the prompt, a blank line, the file), at the same concurrency, on one pooled httpcore
client, and reads no more of a reply than its status. A failed attempt (a 5xx, a dropped
connection) is sent again at once, so under faults the floor is what a client with free,
instant retries would take. Whatever the tool takes beyond this row's wall time is its own cost.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpcore


def main() -> None:
    base, root, concurrency, model, prompt = sys.argv[1:6]
    jobs = int(concurrency)
    url = base.rstrip("/") + "/chat/completions"
    headers = [
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer " + os.environ.get("OPENAI_API_KEY", "x").encode()),
    ]
    files = sorted(Path(root).iterdir())
    pool = httpcore.ConnectionPool(max_connections=jobs)

    def one(path: Path) -> int:
        content = prompt + "\n\n" + path.read_text()
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]})
        for attempt in range(50):
            try:
                reply = pool.request("POST", url, headers=headers, content=body.encode())
            except (httpcore.NetworkError, httpcore.ProtocolError):
                continue
            if reply.status == 200:
                return attempt + 1
        return 0

    with ThreadPoolExecutor(jobs) as workers:
        attempts = list(workers.map(one, files))
    lost = attempts.count(0)
    print(json.dumps({"requests": sum(attempts), "lost": lost}))
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
