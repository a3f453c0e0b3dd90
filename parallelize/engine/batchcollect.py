"""A finished batch's output and error files, read into the call cache (one stage's runner).

Each answered line is parsed as an online reply would be and stored; each failed one records why
and whether another try may cure it; a batch that failed validation ends the run with the
server's reasons, one refused by the enqueued-token limit is dropped and submitted later.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, FatalLLMError, LLMError
from ..masking import for_people
from ..records import Completion
from .batchfiles import read_lines
from .client import _status_error
from .reply import parse_completion
from .transport import Reply

if TYPE_CHECKING:
    from .batchrun import BatchRunner


def _safe(batch_id: str) -> str:
    """A file name part for a server-supplied batch id (never a path of its own)."""
    return hashlib.sha256(batch_id.encode()).hexdigest()[:20]


def collect(runner: BatchRunner, batch_id: str, endpoint: str, batch: dict[str, Any]) -> None:
    """Store a finished batch's answers in the cache and record why the rest failed."""
    keys = set(runner.cache.line_keys(batch_id))
    status = str(batch.get("status"))
    if status == "failed":
        _failed(runner, batch_id, batch, keys)
        return
    api = runner.api(endpoint)
    failures: dict[str, tuple[str, bool]] = {}
    answered: set[str] = set()
    for name in ("output_file_id", "error_file_id"):
        file_id = batch.get(name)
        if not isinstance(file_id, str) or not file_id:
            continue
        runner.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = api.download(file_id, runner.folder / f"{_safe(batch_id)}-{name}.jsonl")
        try:
            for line in read_lines(path):
                key = line.get("custom_id")
                if not isinstance(key, str) or key not in keys:
                    continue
                outcome = _line(runner, key, line)
                if isinstance(outcome, Completion):
                    answered.add(key)
                    failures.pop(key, None)
                else:
                    failures[key] = outcome
        finally:
            path.unlink(missing_ok=True)
    why = f"not run: the batch {batch_id} was {status}"
    for key in keys - answered - set(failures):
        failures[key] = (why, False)
    runner.cache.flush()
    runner.cache.fail_lines(batch_id, failures)
    runner.cache.set_batch_state(batch_id, "collected")
    runner.held = None  # a batch ended: the enqueued-token limit may take a new one
    if failures:
        runner.notice(
            f"batch {batch_id}: {status}; {len(answered)} answered, {len(failures)} failed "
            f"({for_people(next(iter(failures.values()))[0], 200)})"
        )


def _line(runner: BatchRunner, key: str, line: dict[str, Any]) -> Completion | tuple[str, bool]:
    """One output or error line: its completion (stored in the cache), or (why, final)."""
    response = line.get("response")
    error = line.get("error")
    if not isinstance(response, dict):
        detail = error if isinstance(error, dict) else {}
        code, message = detail.get("code"), detail.get("message") or "no response"
        return for_people(f"{code}: {message}" if code else str(message), 300), False
    status = response.get("status_code")
    body = response.get("body")
    raw = json.dumps(body).encode()
    request = runner.requests.get(key)
    model = request.model if request is not None else str((body or {}).get("model", ""))
    if status != 200:
        failed = _classify(int(status or 500), raw, request.body() if request else {})
        final = not failed.retryable or isinstance(failed, FatalLLMError)
        return failed.message, final
    try:
        completion = parse_completion(
            raw, status=200, headers={}, latency=0.0, model=model, tools_offered=False
        )
    except LLMError as exc:
        return exc.message, not exc.retryable
    runner.cache.put(key, completion)
    for warning in set(completion.warnings) - runner.warned:
        runner.warned.add(warning)
        runner.notice(f"warning: {warning}")
    if request is not None and key in runner.requests:
        runner.completions[key] = replace(completion, cached=False)
    return completion


def _failed(runner: BatchRunner, batch_id: str, batch: dict[str, Any], keys: set[str]) -> None:
    errors = (batch.get("errors") or {}).get("data") or []
    reasons = [
        for_people(f"line {e.get('line')}: {e.get('code')}: {e.get('message')}", 300)
        if e.get("line")
        else for_people(f"{e.get('code')}: {e.get('message')}", 300)
        for e in errors
        if isinstance(e, dict)
    ] or ["no reason given"]
    if any(isinstance(e, dict) and e.get("code") == "token_limit_exceeded" for e in errors):
        runner.cache.drop_batch(batch_id)  # its lines never ran: they are submitted later
        runner.held = reasons[0]
        runner.notice(
            f"warning: batch {batch_id} refused by the enqueued-token limit: its "
            f"{len(keys)} call(s) wait for the running batches to finish"
        )
        return
    why = f"batch {batch_id} failed validation: {'; '.join(reasons[:3])}"
    runner.cache.fail_lines(batch_id, {k: (why, True) for k in keys})
    runner.cache.set_batch_state(batch_id, "collected")
    raise ConfigError(why, hint="fix the request (model, parameters) and run again")


def _classify(status: int, raw: bytes, body: dict[str, Any]) -> LLMError:
    """A failed line's error, as the online path would have raised it for the same reply."""
    return _status_error(Reply(status, {}, raw), body)
