"""The loopback Batch API fake itself: uploads, scripted transitions, listing, output files."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batchserver import BatchServer


@pytest.fixture(scope="module")
def fake() -> Iterator[BatchServer]:
    with BatchServer() as server:
        yield server


def call(server: BatchServer, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    data = kw.get("raw") if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method)
    request.add_header("Content-Type", kw.get("content_type", "application/json"))
    try:
        with urllib.request.urlopen(request) as reply:
            content = reply.read()
            return content if path.endswith("/content") else json.loads(content)
    except urllib.error.HTTPError as exc:
        return exc.code


def upload(server: BatchServer, lines: list[dict[str, Any]]) -> str:
    payload = "".join(json.dumps(line) + "\n" for line in lines).encode()
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    reply = call(
        server,
        "POST",
        "/v1/files",
        raw=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert reply["bytes"] == len(payload)
    return str(reply["id"])


def line(n: int) -> dict[str, Any]:
    body = {"model": "test-model", "messages": [{"role": "user", "content": f"q{n}"}]}
    return {"custom_id": f"k{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}


def create(server: BatchServer, n: int = 6) -> dict[str, Any]:
    file_id = upload(server, [line(i) for i in range(n)])
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"run": "r1"},
    }
    return dict(call(server, "POST", "/v1/batches", body))


def poll_to_end(server: BatchServer, batch_id: str) -> list[str]:
    seen = []
    for _ in range(10):
        got = call(server, "GET", f"/v1/batches/{batch_id}")
        if isinstance(got, int):
            return [*seen, str(got)]
        seen.append(got["status"])
        if got["status"] in ("completed", "failed", "expired", "cancelled"):
            return seen
    return seen


def output(server: BatchServer, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    data = call(server, "GET", f"/v1/files/{file_id}/content")
    return [json.loads(x) for x in data.splitlines()]


def test_completed_walks_every_status_and_answers_like_chat(fake: BatchServer) -> None:
    fake.reset()
    fake.script("q3", status=400)
    batch = create(fake)
    assert batch["status"] == "validating"
    assert poll_to_end(fake, batch["id"]) == ["in_progress", "finalizing", "completed"]
    got = call(fake, "GET", f"/v1/batches/{batch['id']}")
    assert got["request_counts"] == {"total": 6, "completed": 5, "failed": 1}
    out = output(fake, got["output_file_id"])
    assert sorted(o["custom_id"] for o in out) == ["k0", "k1", "k2", "k4", "k5"]
    assert [o["custom_id"] for o in out] != sorted(o["custom_id"] for o in out)  # shuffled
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"].startswith("ECHO q")
    errors = output(fake, got["error_file_id"])
    assert [e["custom_id"] for e in errors] == ["k3"]
    assert errors[0]["response"]["status_code"] == 400


@pytest.mark.parametrize(
    ("outcome", "path"),
    [
        ("failed", ["failed"]),
        ("token_limit", ["failed"]),
        ("expired", ["in_progress", "expired"]),
        ("cancelled", ["in_progress", "cancelling", "cancelled"]),
        ("vanish", ["404"]),
    ],
)
def test_scripted_outcomes(fake: BatchServer, outcome: str, path: list[str]) -> None:
    fake.reset()
    fake.outcomes = [outcome]
    batch = create(fake, 4)
    assert poll_to_end(fake, batch["id"]) == path
    if outcome in ("expired", "cancelled"):
        got = call(fake, "GET", f"/v1/batches/{batch['id']}")
        assert len(output(fake, got["output_file_id"])) == 2
        assert {e["error"]["code"] for e in output(fake, got["error_file_id"])} == {
            f"batch_{outcome}"
        }
    if outcome == "token_limit":
        got = call(fake, "GET", f"/v1/batches/{batch['id']}")
        assert got["errors"]["data"][0]["code"] == "token_limit_exceeded"


def test_listing_pages_newest_first_with_metadata(fake: BatchServer) -> None:
    fake.reset()
    ids = [create(fake, 1)["id"] for _ in range(3)]
    page = call(fake, "GET", "/v1/batches?limit=2")
    assert [b["id"] for b in page["data"]] == ids[::-1][:2] and page["has_more"]
    rest = call(fake, "GET", f"/v1/batches?limit=2&after={page['last_id']}")
    assert [b["id"] for b in rest["data"]] == [ids[0]] and not rest["has_more"]
    assert rest["data"][0]["metadata"] == {"run": "r1"}
    assert fake.submitted_lines() == ["k0", "k0", "k0"]


def test_cancel(fake: BatchServer) -> None:
    fake.reset()
    batch = create(fake, 4)
    assert call(fake, "POST", f"/v1/batches/{batch['id']}/cancel", {})["status"] == "cancelling"
    assert poll_to_end(fake, batch["id"]) == ["cancelled"]


def test_a_download_over_its_limit_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    """A server streaming a file without end must not fill the disk."""
    from parallelize.engine.batchapi import BatchAPI, BatchAPIError
    from parallelize.engine.client import Endpoint
    from parallelize.errors import LLMError

    with BatchServer() as server:
        file_id = upload(server, [{"custom_id": f"k{i}", "body": {}} for i in range(50)])
        endpoint = Endpoint(server.base_url, "sk-test-loopback-key-0000")
        with BatchAPI(endpoint) as api:
            whole = api.download(file_id, tmp_path / "whole.jsonl")
            size = whole.stat().st_size
            with pytest.raises(BatchAPIError, match="larger than") as refused:
                api.download(file_id, tmp_path / "cut.jsonl", limit=size // 2)
    assert isinstance(refused.value, LLMError) and not refused.value.retryable
    assert not (tmp_path / "cut.jsonl").exists() and not (tmp_path / "cut.jsonl.part").exists()
