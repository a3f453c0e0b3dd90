"""A declared command as a tool: its argv template filled with whole arguments, no shell.

It runs in the input root with its declared timeout, an environment of only PATH, HOME, LANG
and TMPDIR (never an API key), no stdin, and its output read up to a cap (the rest is counted
and dropped). A value that starts with `-` is refused unless the template puts `--` before it,
so a model cannot turn a value into an option; a `format: path` parameter is confined like fs.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from ..recipe.limits import PLACEHOLDER
from ..recipe.tools import CommandTool
from .base import ToolOutcome, ToolSpec
from .output import DEFAULT_OUTPUT_CHARS, bounded
from .root import Refused, RootFiles

#: The environment variables a command inherits; nothing else (no key, no token) goes along.
KEPT_ENV = ("PATH", "HOME", "LANG", "TMPDIR")
#: Bytes of output kept; more is read (so the command is not blocked) and only counted.
OUTPUT_BYTES = DEFAULT_OUTPUT_CHARS * 4
READ_BLOCK = 65536
#: Seconds between checks of a running command (it is not reaped until its group is killed).
POLL_SECONDS = 0.02

#: The process group of each command running now -> the source that started it (the exit hook
#: ends them all, a source's close() its own).
_LIVE: dict[int, object] = {}
_LIVE_LOCK = threading.Lock()


class CommandSource:
    """One declared command (a ToolSource)."""

    def __init__(self, tool: CommandTool, root: RootFiles) -> None:
        self.tool = tool
        self.root = root
        self.spec = ToolSpec(tool.name, tool.description, tool.parameters)

    def specs(self) -> Sequence[ToolSpec]:
        return (self.spec,)

    def close(self) -> None:
        """End the commands still running (Ctrl-C: they run in their own session, so the
        terminal's SIGINT never reaches them)."""
        end_running(self)

    def call(self, name: str, arguments: Mapping[str, Any], *, timeout: float) -> ToolOutcome:
        started = time.monotonic()
        try:
            argv = self.argv(arguments)
        except Refused as exc:
            return ToolOutcome(False, "", str(exc), time.monotonic() - started)
        limit = min(timeout, self.tool.timeout)
        try:
            code, data, total = run_bounded(argv, cwd=self.root.root, timeout=limit, owner=self)
        except FileNotFoundError:
            error = f"the program {argv[0]!r} was not found"
            return ToolOutcome(False, "", error, time.monotonic() - started)
        except OSError as exc:
            error = f"the command could not start: {exc.strerror or exc}"
            return ToolOutcome(False, "", error, time.monotonic() - started)
        text = bounded(data.decode("utf-8", "replace"), total=total if total > len(data) else None)
        duration = time.monotonic() - started
        if code is None:
            return ToolOutcome(False, text, f"timed out after {limit:g}s", duration, total)
        if code != 0:
            return ToolOutcome(False, text, f"exit status {code}", duration, total)
        return ToolOutcome(True, text, None, duration, total)

    def argv(self, arguments: Mapping[str, Any]) -> list[str]:
        """The command with each placeholder replaced by one whole argument (or left out when
        an optional parameter is not given)."""
        properties = self.tool.parameters.get("properties", {})
        out: list[str] = []
        after_dashes = False
        for part in self.tool.command:
            names = PLACEHOLDER.findall(part)
            if not names:
                out.append(part)
                after_dashes = after_dashes or part == "--"
                continue
            name = names[0]
            if name not in arguments or arguments[name] is None:
                continue
            value = _as_argument(name, arguments[name])
            schema = properties.get(name, {})
            if isinstance(schema, Mapping) and schema.get("format") == "path":
                value = self.root.entry(value, what=name)
            if value.startswith("-") and not after_dashes:
                raise Refused(f"{name} starts with '-', which the command would read as an option")
            out.append(value)
        return out


def _as_argument(name: str, value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        raise Refused(f"{name} must be a string or a number, not {type(value).__name__}")
    if "\0" in text:
        raise Refused(f"{name} contains a NUL character")
    return text


def command_env() -> dict[str, str]:
    """The environment a command runs with: PATH, HOME, LANG and TMPDIR only."""
    return {k: os.environ[k] for k in KEPT_ENV if k in os.environ}


def run_bounded(
    argv: Sequence[str],
    *,
    cwd: str,
    timeout: float,
    cap: int = OUTPUT_BYTES,
    owner: object = None,
) -> tuple[int | None, bytes, int]:
    """(exit status or None on timeout, the first `cap` bytes of output, total bytes).

    The command runs in its own process group, which is killed when it ends, times out or the
    run stops: a child it left in the background does not outlive the call."""
    with _LIVE_LOCK:
        process = subprocess.Popen(  # argv from a declared template, never a shell
            list(argv),
            cwd=cwd,
            env=command_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a timeout kills its children too
        )
        _LIVE[process.pid] = owner
    kept = bytearray()
    total = [0]
    assert process.stdout is not None  # piped above
    reader = threading.Thread(target=_drain, args=(process.stdout, kept, total, cap), daemon=True)
    reader.start()
    try:
        exited = _exited(process.pid, time.monotonic() + timeout)
    finally:
        # Killed before the leader is reaped, so its group id cannot have been reused.
        with _LIVE_LOCK:
            _LIVE.pop(process.pid, None)
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
        code: int | None = process.wait()
    reader.join(timeout=1.0)
    process.stdout.close()
    return (code if exited else None), bytes(kept[:cap]), total[0]


def _exited(pid: int, deadline: float) -> bool:
    """Wait until the process exits (True) or the deadline passes (False), without reaping."""
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    while True:
        try:
            if os.waitid(os.P_PID, pid, flags) is not None:
                return True
        except ChildProcessError:  # already reaped (cannot happen here, but never hang)
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(POLL_SECONDS, left))


def end_running(owner: object = None) -> None:
    """Kill the commands `owner` started that still run (every one without an owner)."""
    with _LIVE_LOCK:
        for group in [g for g, o in _LIVE.items() if owner is None or o is owner]:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)


atexit.register(end_running)


def _drain(stream: IO[bytes], kept: bytearray, total: list[int], cap: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        while block := stream.read1(READ_BLOCK):  # type: ignore[attr-defined]  # a BufferedReader
            total[0] += len(block)
            if len(kept) < cap:
                kept.extend(block[: cap - len(kept)])
