"""The run's tools: sources opened from the recipe's entries, one pool that runs every call.

`ToolKit.run_calls` runs all the calls of one reply at once on the shared pool and returns
their results in the model's order. A call never raises: an unknown name, arguments that are
not JSON or fail the schema, a refused path, a failure or a timeout are each a result the model
reads and can correct. Every result is bounded, scanned for secrets and framed before it is sent.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..inputs.bounds import Reserved
from ..recipe.tools import DEFAULT_MAX_TOOL_ROUNDS, CommandTool, McpTool, ToolEntry, entry_name
from ..records import ToolCall, ToolCallRecord
from .base import ToolOutcome, ToolSource, ToolSpec
from .output import framed

#: Seconds an fs call or an MCP call may take.
DEFAULT_TOOL_TIMEOUT = 30.0
#: Tool calls one reply may carry: the rest are answered with an error, not run.
MAX_CALLS_PER_REPLY = 32
#: Bytes of tool results one task may send back in all its rounds; later results are errors.
MAX_TASK_TOOL_BYTES = 256 * 1024


@dataclass(frozen=True)
class ToolSettings:
    """What the run offers: the entries (recipe, then --tools), the limits, the root."""

    entries: tuple[ToolEntry, ...]
    max_rounds: int = DEFAULT_MAX_TOOL_ROUNDS
    concurrency: int | None = None
    root: str = "."
    reserved: tuple[Reserved, ...] = field(default=())

    def names(self) -> list[str]:
        """How the dry run lists the entries."""
        return [entry_name(e) for e in self.entries]


@dataclass(frozen=True)
class Answered:
    """One call's result: the tool message's content and the record `--format json` shows."""

    call: ToolCall
    content: str
    record: ToolCallRecord


class ToolKit:
    """The sources of one run, the name of each tool, and the pool their calls run on."""

    def __init__(self, settings: ToolSettings, *, workers: int) -> None:
        from .root import RootFiles

        self.settings = settings
        self.root = RootFiles(settings.root, reserved=settings.reserved)
        self.sources: list[ToolSource] = []
        self._by_name: dict[str, tuple[ToolSource, ToolSpec]] = {}
        self._timeouts: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="parallelize-tool")
        self._lock = threading.Lock()
        self.in_flight = 0
        try:
            for entry in settings.entries:
                self._open(entry)
        except BaseException:
            self.close()
            raise

    def _open(self, entry: ToolEntry) -> None:
        source: ToolSource
        timeout = DEFAULT_TOOL_TIMEOUT
        if isinstance(entry, str):
            from .fs import FsTools

            source = FsTools(self.root)
        elif isinstance(entry, CommandTool):
            from .command import CommandSource

            source, timeout = CommandSource(entry, self.root), entry.timeout
        else:
            source = _open_mcp(entry, self.root.root)
        self.sources.append(source)
        for spec in source.specs():
            if spec.name in self._by_name:
                raise ConfigError(
                    f"tools: two tools are named '{spec.name}' ({entry_name(entry)} and an "
                    "earlier entry)",
                    hint="rename the declared command",
                )
            self._by_name[spec.name] = (source, spec)
            self._timeouts[spec.name] = timeout

    @property
    def max_rounds(self) -> int:
        return self.settings.max_rounds

    def specs(self) -> list[ToolSpec]:
        """Every tool offered, in the order of the entries."""
        return [spec for _, spec in self._by_name.values()]

    def offers(self) -> list[dict[str, Any]]:
        """The request's `tools` list."""
        return [spec.offer() for spec in self.specs()]

    def run_calls(
        self,
        calls: Sequence[ToolCall],
        *,
        on_start: Callable[[int], None] | None = None,
        spent: int = 0,
    ) -> list[Answered]:
        """Run the reply's calls at once on the pool; results in the order of `calls`.

        `spent` is the bytes of tool results the task has sent already: at most
        MAX_CALLS_PER_REPLY calls run, and results past MAX_TASK_TOOL_BYTES become errors."""
        if spent >= MAX_TASK_TOOL_BYTES:
            return [self._refuse(call, OVER_BYTES) for call in calls]
        running = list(calls[:MAX_CALLS_PER_REPLY])
        with self._lock:
            self.in_flight += len(running)
            flying = self.in_flight
        if on_start is not None:
            on_start(flying)
        try:
            futures = [self._pool.submit(self._answer, call) for call in running]
            answered = [future.result() for future in futures]
        finally:
            with self._lock:
                self.in_flight -= len(running)
        kept: list[Answered] = []
        for done in answered:
            spent += len(done.content.encode("utf-8", "surrogatepass"))
            kept.append(
                done if spent <= MAX_TASK_TOOL_BYTES else self._refuse(done.call, OVER_BYTES)
            )
        return kept + [self._refuse(call, TOO_MANY) for call in calls[MAX_CALLS_PER_REPLY:]]

    def _refuse(self, call: ToolCall, error: str) -> Answered:
        """A call answered with an error without running it (or with its result dropped)."""
        content, _ = framed(call.name, call.arguments, f"error: {error}")
        record = ToolCallRecord(call.name, call.arguments, False, error, 0.0, 0)
        return Answered(call, content, record)

    def _answer(self, call: ToolCall) -> Answered:
        started = time.monotonic()
        arguments: Mapping[str, Any] | str = call.arguments
        try:
            arguments = self._arguments(call)
            source, _ = self._by_name[call.name]
            outcome = source.call(call.name, arguments, timeout=self._timeouts[call.name])
        except _Mistake as exc:
            outcome = ToolOutcome(False, "", str(exc), time.monotonic() - started)
        except Exception as exc:  # a tool's own bug is the model's error message, not a crash
            outcome = ToolOutcome(False, "", f"the tool failed: {exc}", time.monotonic() - started)
        text = outcome.text if outcome.ok else f"error: {outcome.error}\n{outcome.text}".rstrip()
        content, _ = framed(call.name, arguments, text)
        record = ToolCallRecord(
            name=call.name,
            arguments=arguments if isinstance(arguments, Mapping) else call.arguments,
            ok=outcome.ok,
            error=outcome.error,
            duration_s=outcome.duration_s,
            bytes=outcome.bytes,
        )
        return Answered(call, content, record)

    def _arguments(self, call: ToolCall) -> Mapping[str, Any]:
        if call.name not in self._by_name:
            known = ", ".join(self._by_name) or "none"
            raise _Mistake(f"there is no tool named {call.name!r} (the tools are: {known})")
        try:
            arguments = json.loads(call.arguments or "{}")
        except (ValueError, RecursionError) as exc:
            raise _Mistake(f"the arguments are not JSON ({exc}); send a JSON object") from None
        if not isinstance(arguments, dict):
            raise _Mistake("the arguments must be a JSON object")
        from jsonschema import Draft202012Validator

        _, spec = self._by_name[call.name]
        errors = sorted(
            Draft202012Validator(dict(spec.parameters)).iter_errors(arguments),
            key=lambda e: list(e.absolute_path),
        )
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "arguments"
            raise _Mistake(f"{where}: {errors[0].message}")
        return arguments

    def close(self) -> None:
        """Stop the pool and close every source (an MCP server process ends here)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for source in self.sources:
            try:
                source.close()
            except Exception:  # closing one must not keep the others open
                continue


TOO_MANY = (
    f"not run: a reply may make at most {MAX_CALLS_PER_REPLY} tool calls; ask for the rest in "
    "the next reply"
)
OVER_BYTES = (
    f"not sent: this task's tool results passed {MAX_TASK_TOOL_BYTES // 1024} KB; answer with "
    "what you have"
)


class _Mistake(Exception):
    """A call the model got wrong; its message goes back to the model."""


def _open_mcp(entry: McpTool, root: str) -> ToolSource:
    """An MCP server's source; the SDK is an optional extra, imported only when listed."""
    try:
        from . import mcp

        return mcp.open_mcp_source(list(entry.mcp), root=root, timeout=DEFAULT_TOOL_TIMEOUT)
    except ImportError:
        raise ConfigError(
            f"tools: {entry_name(entry)} needs the MCP SDK",
            hint="pip install 'parallelize[mcp]'",
        ) from None


#: Why fs is refused without a root (the CLI's one-line error).
NO_ROOT = "--tools fs: the fs tools need one folder to read and {why}; name it with --tool-root DIR"


def input_root(paths: Sequence[str], named: str | None = None) -> str | None:
    """The root tools see: --tool-root, else a single folder PATH, else a single file's own
    folder. None for stdin, several paths or none: the working directory is no root (in a
    home folder it would offer shell history and tool credentials to the model)."""
    if named:
        return os.path.abspath(named)
    if len(paths) == 1 and paths[0] != "-":
        if os.path.isdir(paths[0]):
            return os.path.abspath(paths[0])
        if os.path.isfile(paths[0]):
            return os.path.dirname(os.path.abspath(paths[0]))
    return None


def root_refusal(entries: Sequence[object], root: str | None, *, why: str) -> str | None:
    """The CLI's error when fs is offered with no root, else None."""
    return NO_ROOT.format(why=why) if root is None and "fs" in entries else None
