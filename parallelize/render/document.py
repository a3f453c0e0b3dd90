"""The artifact on stdout or in `--output`, the `--format json` document, and SARIF.

stdout carries only the artifact; everything meant for people goes to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK, InputError
from ..masking import mask
from ..merge.files import write_atomic
from ..records import RunResult, TaskResult
from .plan import plan_text

SCHEMA_VERSION = 1


def task_record(result: TaskResult) -> dict[str, Any]:
    """One call as JSON: its data, output, usage and status."""
    completion = result.completion
    return {
        "index": result.task.index,
        "label": result.task.label,
        **result.task.record(),
        "model": completion.model if completion else result.task.request.model,
        "status": result.status,
        "output": result.text,
        "finish_reason": completion.finish_reason if completion else None,
        "usage": {
            "prompt_tokens": completion.usage.prompt_tokens if completion else 0,
            "completion_tokens": completion.usage.completion_tokens if completion else 0,
            "cached_tokens": completion.usage.cached_tokens if completion else 0,
        },
        "cached": bool(completion and completion.cached),
        "attempts": result.attempts,
        "error": result.error,
        # Wall seconds of the call, retries included; 0 for a cache hit (no call was made).
        "duration_s": round(result.duration, 3),
        # Only for calls that used tools: each call, in the order it was made.
        **({"tool_calls": [c.record() for c in result.tool_calls]} if result.tool_calls else {}),
    }


def envelope(result: RunResult) -> dict[str, Any]:
    """The `--format json` document: everything, under a schema version."""
    usage = result.usage
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command": result.command,
        "recipe": result.recipe,
        "model": result.model,
        "dry_run": result.dry_run,
        "exit_code": result.exit_code,
        "result": result.output,
        "tasks": [task_record(r) for r in result.results],
        "aggregate_calls": [task_record(r) for r in result.aggregate_calls],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cached_tokens": usage.cached_tokens,
        },
        "wall_time": round(result.wall_time, 3),
        "failures": len(result.failed),
        "truncated": len(result.truncated),
        "warnings": result.warnings,
        **result.details,
    }
    if result.dry_run:
        doc["plan"] = [
            {"label": t.label, **t.record(), "messages": list(t.request.messages)}
            for t in result.tasks
        ]
    return doc


def emit(result: RunResult, *, fmt: str, output: Path | None) -> None:
    """Write the artifact (or the JSON envelope) to stdout or to `output`, atomically."""
    if fmt == "json":
        text = json.dumps(envelope(result), indent=2, ensure_ascii=False, default=str) + "\n"
    elif fmt == "sarif":
        from .sarif import sarif_text  # only for --format sarif

        text = sarif_text(result)  # exit 2 when the result has no findings with locations
    elif result.dry_run:
        text = plan_text(result)
    else:
        text = result.output
    if output is None:
        sys.stdout.write(mask(text))
        sys.stdout.flush()
        return
    if result.exit_code != EXIT_OK and not text:
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(output, text)
    except OSError as exc:
        sys.stdout.write(mask(text))  # never lose a finished result: print it instead
        raise InputError(
            f"--output {output}: cannot write ({exc.strerror}); the result went to stdout"
        ) from None
