"""Loopback fake of OpenAI's Files and Batch APIs on top of tests/llmserver.py (stdlib only).

``BatchServer`` is an LLMServer (chat completions, models, rules, knobs) that also serves
``/v1/files`` (multipart upload, metadata, ``/content``) and ``/v1/batches`` (create, get, list
with ``limit``/``after``, cancel); Azure's ``/openai/files`` and ``/openai/batches`` paths too, the
query (``api-version``) kept in the request log. Each batch lines are answered the way a chat
request is (the same rules, context window and model list), so an answer is the online one.

Transitions are scripted and driven by polls: every GET of a batch moves it one step along its
outcome's path. ``outcomes`` is a list consumed one per created batch (then ``outcome``, default
"completed"):

- completed: validating, in_progress, finalizing, completed (error file for lines a rule fails)
- failed: validating, failed (``errors.data`` says why: a line's reasons, ``invalid_lines``)
- token_limit: validating, failed (``token_limit_exceeded``)
- expired: validating, in_progress, expired; the first ``partial`` fraction of lines answered,
  the others in the error file with ``batch_expired``
- cancelled: validating, in_progress, cancelling, cancelled (partial output like expired)
- vanish: the batch is created, then every GET says 404 and listing leaves it out

Output lines come in shuffled order when ``shuffle`` is set (the default). ``processing_seconds``
is the CPU time the server spent on uploads, batches and downloads (for the benchmark).
As a process: ``python tests/batchserver.py --port 0`` prints ``READY <base_url>``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or from bench/
from llmserver import (  # the sibling module, found through the line above
    DEFAULT_MODEL,
    LLMServer,
    RecordedRequest,
    _Handler,
    _reject,
    build_completion,
    error_body,
    prompt_tokens,
    serve_until_signalled,
)

FILES = re.compile(r"^(?:/v1|/openai(?:/v1)?)?/files(?:/([^/]+)(/content)?)?$")
BATCHES = re.compile(r"^(?:/v1|/openai(?:/v1)?)?/batches(?:/([^/]+)(/cancel)?)?$")
ENDPOINTS = ("/v1/chat/completions", "/chat/completions")
PATHS: dict[str, tuple[str, ...]] = {
    "completed": ("validating", "in_progress", "finalizing", "completed"),
    "failed": ("validating", "failed"),
    "token_limit": ("validating", "failed"),
    "expired": ("validating", "in_progress", "expired"),
    "cancelled": ("validating", "in_progress", "cancelling", "cancelled"),
    "vanish": ("validating",),
}
TIMESTAMPS = {
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelling": "cancelling_at",
    "cancelled": "cancelled_at",
}


@dataclass
class FakeBatch:
    """One batch: its object as served, the path it walks and where it is on it."""

    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, Any]
    outcome: str
    step: int = 0
    vanished: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: dict[str, Any] | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    created_at: int = field(default_factory=lambda: int(time.time()))
    stamps: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return PATHS[self.outcome][self.step]

    def view(self) -> dict[str, Any]:
        """The batch object as OpenAI serves it."""
        out: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 86400,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }
        for name in TIMESTAMPS.values():
            out[name] = self.stamps.get(name)
        return out


class BatchServer(LLMServer):
    """An LLMServer that also serves the Files and Batch APIs, with scripted batch outcomes."""

    outcome: str = "completed"
    shuffle: bool = True
    partial: float = 0.5

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._httpd.RequestHandlerClass = _BatchHandler

    def reset(self) -> None:
        """Also forget files, batches and outcome scripts."""
        super().reset()
        with self._lock:
            self.outcome = BatchServer.outcome
            self.shuffle = BatchServer.shuffle
            self.partial = BatchServer.partial
            #: While set, polls leave a batch in_progress (a test kills the client meanwhile).
            self.paused = False
            #: While set, a create records its batch and answers only once released (or after
            #: 30 s): the client is killed in between, before it could record the batch's id.
            self.hold_creates = False
            self.creates_released = threading.Event()
            self.outcomes: list[str] = []
            #: Transient Files/Batch API faults, each answering the next request that matches:
            #: (method, path pattern, status or 0 to drop the connection, Retry-After or None).
            self.api_faults: list[tuple[str, str, int, str | None]] = []
            self.files: dict[str, tuple[str, bytes]] = {}
            self.batches: dict[str, FakeBatch] = {}
            self.processing_seconds = 0.0
            self._file_ids = itertools.count(1)
            self._batch_ids = itertools.count(1)
            self._line_ids = itertools.count(1)

    def submitted_lines(self) -> list[str]:
        """The custom_id of every line of every batch created so far (duplicates kept)."""
        with self._lock:
            batches = list(self.batches.values())
            files = dict(self.files)
        ids = []
        for batch in batches:
            for line in files[batch.input_file_id][1].splitlines():
                ids.append(json.loads(line)["custom_id"])
        return ids

    def count_path(self, method: str, pattern: str) -> int:
        """How many logged requests had this method and a path matching `pattern`."""
        with self._lock:
            return sum(
                1 for r in self.all_requests if r.method == method and re.search(pattern, r.path)
            )

    def take_fault(self, method: str, path: str) -> tuple[int, str | None] | None:
        """The first scripted fault for this request (used up), or None."""
        with self._lock:
            for fault in self.api_faults:
                if fault[0] == method and re.search(fault[1], path):
                    self.api_faults.remove(fault)
                    return fault[2], fault[3]
        return None

    # ---- files ----

    def add_file(self, purpose: str, data: bytes) -> str:
        with self._lock:
            file_id = f"file-{next(self._file_ids)}"
            self.files[file_id] = (purpose, data)
        return file_id

    def file_view(self, file_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.files.get(file_id)
        if found is None:
            return None
        purpose, data = found
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": f"{file_id}.jsonl",
            "purpose": purpose,
        }

    # ---- batches ----

    def create_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        invalid = "invalid_request_error"
        file_id, endpoint = body.get("input_file_id"), body.get("endpoint")
        with self._lock:
            known = file_id in self.files
        if not known:
            return 400, error_body(f"No such File object: {file_id}", invalid)
        if endpoint not in ENDPOINTS:
            return 400, error_body(f"Invalid endpoint: {endpoint}", invalid, param="endpoint")
        if body.get("completion_window") != "24h":
            return 400, error_body("Invalid completion_window", invalid)
        metadata = body.get("metadata") or {}
        with self._lock:
            outcome = self.outcomes.pop(0) if self.outcomes else self.outcome
            batch = FakeBatch(
                f"batch_{next(self._batch_ids)}", file_id, endpoint, metadata, outcome
            )
            batch.total = len(self.files[file_id][1].splitlines())
            batch.vanished = outcome == "vanish"  # created, then gone
            self.batches[batch.id] = batch
            hold = self.hold_creates
        if hold:
            self.creates_released.wait(timeout=30)
        return 200, batch.view()

    def get_batch(self, batch_id: str, *, advance: bool) -> FakeBatch | None:
        """The batch, moved one step along its path when `advance` (a poll)."""
        with self._lock:
            batch = self.batches.get(batch_id)
        if batch is None or batch.vanished:
            return None
        held = self.paused and batch.status == "in_progress"
        if advance and not held and batch.step < len(PATHS[batch.outcome]) - 1:
            started = time.thread_time()
            batch.step += 1
            status = batch.status
            if status in TIMESTAMPS:
                batch.stamps[TIMESTAMPS[status]] = int(time.time())
            if status in ("completed", "expired", "cancelled"):
                self._finish(batch)
            elif status == "failed":
                self._fail(batch)
            with self._lock:
                self.processing_seconds += time.thread_time() - started
        return batch

    def cancel_batch(self, batch_id: str) -> FakeBatch | None:
        with self._lock:
            batch = self.batches.get(batch_id)
        if batch is None or batch.vanished:
            return None
        if batch.status in ("validating", "in_progress"):
            batch.outcome, batch.step = "cancelled", 2
            batch.stamps["cancelling_at"] = int(time.time())
        return batch

    def list_batches(self, query: str) -> dict[str, Any]:
        params = parse_qs(query)
        limit = int(params.get("limit", ["20"])[0])
        after = params.get("after", [None])[0]
        with self._lock:
            newest = [b for b in reversed(self.batches.values()) if not b.vanished]
        if after is not None:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        page = newest[:limit]
        return {
            "object": "list",
            "data": [b.view() for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(newest) > limit,
        }

    def _fail(self, batch: FakeBatch) -> None:
        if batch.outcome == "token_limit":
            message = (
                "Enqueued token limit reached for test-model in organization org-test. "
                "Limit: 90,000 enqueued tokens. Please try submitting an input file with "
                "fewer tokens, or wait for current batches to complete."
            )
            batch.errors = {
                "object": "list",
                "data": [{"code": "token_limit_exceeded", "message": message, "line": None}],
            }
            return
        batch.errors = {"object": "list", "data": self._validate(batch)}

    def _validate(self, batch: FakeBatch) -> list[dict[str, Any]]:
        """Why a batch's file is refused: the first lines at fault (a scripted failure names
        line 1 when every line is fine)."""
        found = []
        for number, line in enumerate(self._lines(batch), 1):
            body = line.get("body") or {}
            if line.get("method") != "POST" or line.get("url") != batch.endpoint:
                found.append(
                    {
                        "code": "invalid_url",
                        "message": "The URL provided for this request "
                        "does not match the batch endpoint.",
                        "param": "url",
                        "line": number,
                    }
                )
            elif body.get("model") not in self.models:
                found.append(
                    {
                        "code": "model_not_found",
                        "message": f"The model '{body.get('model')}' does not exist.",
                        "param": "body.model",
                        "line": number,
                    }
                )
        return found or [
            {
                "code": "invalid_request",
                "message": "This line is not valid (scripted failure).",
                "param": None,
                "line": 1,
            }
        ]

    def _lines(self, batch: FakeBatch) -> Iterator[dict[str, Any]]:
        with self._lock:
            data = self.files[batch.input_file_id][1]
        for raw in data.splitlines():
            yield json.loads(raw)

    def _finish(self, batch: FakeBatch) -> None:
        """Answer the lines (all, or a partial share for expired and cancelled batches)."""
        lines = list(self._lines(batch))
        answered = len(lines)
        if batch.outcome in ("expired", "cancelled"):
            answered = int(len(lines) * self.partial)
        out: list[str] = []
        errors: list[str] = []
        for number, line in enumerate(lines):
            custom_id = line.get("custom_id")
            if number >= answered:
                if batch.outcome == "expired":
                    code, message = (
                        "batch_expired",
                        "This request could not be executed before the completion window expired.",
                    )
                else:
                    code, message = "batch_cancelled", "This request was cancelled."
                errors.append(
                    json.dumps(
                        {
                            "id": f"batch_req_{next(self._line_ids)}",
                            "custom_id": custom_id,
                            "response": None,
                            "error": {"code": code, "message": message},
                        }
                    )
                )
                continue
            status, reply = self._answer(line.get("body") or {})
            record = json.dumps(
                {
                    "id": f"batch_req_{next(self._line_ids)}",
                    "custom_id": custom_id,
                    "response": {
                        "status_code": status,
                        "request_id": f"req_batch_{number}",
                        "body": reply,
                    },
                    "error": None,
                }
            )
            (out if status == 200 else errors).append(record)
        if self.shuffle:
            random.Random(len(lines)).shuffle(out)
        batch.completed, batch.failed = len(out), len(errors)
        if out:
            batch.output_file_id = self.add_file("batch_output", "\n".join(out).encode() + b"\n")
        if errors:
            batch.error_file_id = self.add_file("batch_output", "\n".join(errors).encode() + b"\n")

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """What the chat endpoint would answer this body: (status, body)."""
        rec = RecordedRequest("POST", "/v1/chat/completions", {}, body, time.monotonic())
        if rejected := _reject(self, rec):
            return rejected
        n_prompt = prompt_tokens(body)
        if self.context_window is not None and n_prompt > self.context_window:
            message = (
                f"This model's maximum context length is {self.context_window} tokens. "
                f"However, your messages resulted in {n_prompt} tokens."
            )
            return 400, error_body(message, "invalid_request_error", code="context_length_exceeded")
        rule = self._match(body, rec.prompt)
        if rule is not None and rule.status >= 400:
            err = rule.error or error_body(f"scripted status {rule.status}", "server_error")
            return rule.status, err if "error" in err else {"error": err}
        with self._lock:
            cid = next(self._ids)
        return 200, build_completion(body, rule, cid, n_prompt)


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body by field name."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        return {}
    boundary = b"--" + match.group(1).encode()
    fields: dict[str, bytes] = {}
    for part in raw.split(boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name is not None:
            fields[name.group(1).decode()] = data.removesuffix(b"\r\n")
    return fields


class _BatchHandler(_Handler):
    """The chat handler, plus the Files and Batch API paths."""

    server: Any

    def _read_body(self) -> bytes:
        self._raw = super()._read_body()
        return self._raw

    def _other(self, llm: LLMServer, rec: RecordedRequest) -> None:
        assert isinstance(llm, BatchServer)
        files, batches = FILES.match(rec.path), BATCHES.match(rec.path)
        if files is None and batches is None:
            return super()._other(llm, rec)
        if err := llm._auth_error(rec.headers):
            return self._send(rec, 401, err)
        if (fault := llm.take_fault(rec.method, rec.path)) is not None:
            status, retry_after = fault
            if not status:
                return self._drop()
            headers = {"Retry-After": retry_after} if retry_after is not None else None
            return self._send(rec, status, error_body("scripted fault", "server_error"), headers)
        if files is not None:
            return self._files(llm, rec, files.group(1), bool(files.group(2)))
        assert batches is not None
        return self._batches(llm, rec, batches.group(1), bool(batches.group(2)))

    def _files(
        self, llm: BatchServer, rec: RecordedRequest, file_id: str | None, content: bool
    ) -> None:
        if file_id is None and rec.method == "POST":
            started = time.thread_time()
            fields = _multipart(rec.headers.get("content-type", ""), self._raw)
            purpose = fields.get("purpose", b"").decode()
            if purpose != "batch" or "file" not in fields:
                message = "purpose 'batch' and a file are required"
                return self._send(rec, 400, error_body(message, "invalid_request_error"))
            new = llm.add_file(purpose, fields["file"])
            with llm._lock:
                llm.processing_seconds += time.thread_time() - started
            return self._send(rec, 200, llm.file_view(new))
        view = llm.file_view(file_id) if file_id else None
        if view is None:
            return self._send(
                rec, 404, error_body(f"No such File object: {file_id}", "invalid_request_error")
            )
        if not content:
            return self._send(rec, 200, view)
        with llm._lock:
            data = llm.files[file_id][1]  # type: ignore[index]  # file_id is known here
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        rec.status = 200
        self._commit()
        self.wfile.write(data)
        return None

    def _batches(
        self, llm: BatchServer, rec: RecordedRequest, batch_id: str | None, cancel: bool
    ) -> None:
        if batch_id is None and rec.method == "POST":
            return self._send(rec, *llm.create_batch(rec.body or {}))
        if batch_id is None:
            return self._send(rec, 200, llm.list_batches(rec.query))
        batch = llm.cancel_batch(batch_id) if cancel else llm.get_batch(batch_id, advance=True)
        if batch is None:
            message = f"No batch found with id '{batch_id}'."
            return self._send(rec, 404, error_body(message, "invalid_request_error"))
        return self._send(rec, 200, batch.view())


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", action="extend", nargs="+", dest="models", metavar="NAME")
    args = parser.parse_args(argv)
    server = BatchServer(args.host, args.port)
    server.models = args.models or [DEFAULT_MODEL]
    return serve_until_signalled(server)


if __name__ == "__main__":
    sys.exit(main())
