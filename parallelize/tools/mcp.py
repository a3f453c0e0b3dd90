"""Every tool one MCP server lists, served over stdio through the official `mcp` SDK.

The SDK is async (anyio) and workers are threads, so one event loop runs on a daemon thread for
the life of the run: the server starts once, every call is a coroutine submitted to that loop
(concurrent calls are concurrent requests on the one session), and close() ends the session,
which makes the SDK close the server's stdin, then SIGTERM and SIGKILL its process group. An
atexit hook closes any source still open, so Ctrl-C cannot leave the server behind. Every wait
is bounded, the server's stderr is kept to a short tail (never shown on the terminal), and the
server sees only PATH, HOME, LANG and TMPDIR of our environment, never the API key.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import inspect
import json
import os
import re
import shlex
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from parallelize.errors import ConfigError
from parallelize.tools.base import ToolOutcome, ToolSpec
from parallelize.tools.output import DEFAULT_OUTPUT_CHARS, bounded

INSTALL_HINT = "pip install 'parallelize[mcp]'"
#: What the server inherits from our environment; the SDK adds its own fixed list of harmless
#: names (HOME, LOGNAME, PATH, SHELL, TERM, USER) in mcp 2.x, never anything secret.
ENV_KEPT = ("PATH", "HOME", "LANG", "TMPDIR")
#: How much of the server's stderr is kept (its tail), for error messages.
STDERR_TAIL_BYTES = 8_192
#: Bounds on what the server offers: pages of tools/list and a description's length.
MAX_LIST_PAGES = 20
MAX_DESCRIPTION_CHARS = 1_024
#: The SDK's own shutdown is bounded (stdin closed, 2 s, SIGTERM, 2 s, SIGKILL); this bounds ours.
CLOSE_TIMEOUT_S = 10.0
#: Beyond a call's own timeout, how long a worker waits for the loop to hand the answer back.
HANDOFF_GRACE_S = 2.0
#: The names an OpenAI-compatible endpoint accepts for a function.
_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")

_OPEN: weakref.WeakSet[McpSource] = weakref.WeakSet()


def open_mcp_source(
    argv: Sequence[str],
    *,
    root: Path | str,
    timeout: float,
    max_output_chars: int = DEFAULT_OUTPUT_CHARS,
) -> McpSource:
    """Start the MCP server `argv` in `root` and list its tools; a failure is a one-line error."""
    if not argv:
        raise ConfigError(
            "tools: mcp: the server command is empty", hint="e.g. mcp: [python, -m, my_server]"
        )
    try:
        import mcp  # noqa: F401  (only whether the optional extra is installed)
    except ImportError:
        raise ConfigError(
            "tools: mcp needs the `mcp` package, which is not installed", hint=INSTALL_HINT
        ) from None
    source = McpSource(argv, root=root, timeout=timeout, max_output_chars=max_output_chars)
    source.start()
    return source


class McpSource:
    """A ToolSource over one MCP server process that lives until close()."""

    def __init__(
        self, argv: Sequence[str], *, root: Path | str, timeout: float, max_output_chars: int
    ) -> None:
        self.argv = tuple(argv)
        self.label = shlex.join(self.argv)
        self._root = root
        self._timeout = timeout
        self._max_output_chars = max_output_chars
        self._stderr = _StderrTail(STDERR_TAIL_BYTES)
        self._specs: tuple[ToolSpec, ...] = ()
        self._names: dict[str, str] = {}  # offered name -> the server's own name
        self._session: Any = None  # the SDK's ClientSession while the server is up
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._inflight: set[Any] = set()  # anyio cancel scopes of the calls running now
        self._ready = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run_loop, name="mcp-loop", daemon=True)

    # -- the ToolSource protocol ------------------------------------------------------------

    def specs(self) -> Sequence[ToolSpec]:
        """The tools the server listed at start-up."""
        return self._specs

    def call(self, name: str, arguments: Mapping[str, Any], *, timeout: float) -> ToolOutcome:
        """Run one tools/call; every failure (timeout, crash, isError) is an outcome, not raised."""
        started = time.monotonic()
        server_name = self._names.get(name)
        if server_name is None:
            return self._failed(f"unknown tool {name!r}", started)
        loop = self._loop
        if self._closed or loop is None or self._session is None:
            return self._failed(self._gone(), started)
        try:
            future = asyncio.run_coroutine_threadsafe(
                self._call(server_name, dict(arguments), timeout), loop
            )
        except RuntimeError:  # the loop has already finished
            return self._failed(self._gone(), started)
        try:
            wire = future.result(timeout + HANDOFF_GRACE_S)
        except (TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
            return self._failed(f"{name}: no answer within {timeout:g} s", started)
        except concurrent.futures.CancelledError:
            return self._failed(self._gone(), started)
        except Exception as exc:  # the SDK's errors have no common base across versions
            return self._failed(f"{name}: {self._explain(exc)}", started)
        if wire is None:
            return self._failed(self._gone(), started)
        full = result_text(wire)
        text, size = bounded(full, self._max_output_chars), len(full.encode("utf-8", "replace"))
        elapsed = time.monotonic() - started
        if wire.get("isError"):
            # The first line is the error; the text keeps the rest, so nothing is said twice.
            error = text.strip().split("\n", 1)[0][:200] or f"{name} reported an error"
            rest = "" if text.strip() == error else text
            return ToolOutcome(ok=False, text=rest, error=error, duration_s=elapsed, bytes=size)
        return ToolOutcome(ok=True, text=text, duration_s=elapsed, bytes=size)

    def close(self) -> None:
        """End the session and the server process (bounded); calling it again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _OPEN.discard(self)
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join(CLOSE_TIMEOUT_S)
        self._stderr.close()

    # -- start-up ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread; wait (bounded) until the tools are listed or start-up failed."""
        _OPEN.add(self)
        self._thread.start()
        finished = self._ready.wait(self._timeout + CLOSE_TIMEOUT_S)
        if finished and self._session is not None:
            return
        self.close()
        if not finished:
            reason = f"no answer within {self._timeout:g} s"
        elif isinstance(_first_leaf(self._failure), TimeoutError):
            reason = f"no answer to initialize and tools/list within {self._timeout:g} s"
        else:
            reason = self._explain(self._failure, stderr=False)
        last = self._stderr.last_line()
        raise ConfigError(
            f"tools: mcp: the server `{self.label}` did not start: {reason}",
            hint=f"its stderr ends: {last}" if last else None,
        )

    def _run_loop(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        """Run the session for the whole run: start, list, wait for close(), shut down."""
        import anyio
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        params = StdioServerParameters(
            command=self.argv[0], args=list(self.argv[1:]), env=server_env(), cwd=str(self._root)
        )
        try:
            async with (
                stdio_client(params, errlog=self._stderr.writer) as (read, write),
                ClientSession(read, write) as session,
            ):
                with anyio.fail_after(self._timeout):
                    await session.initialize()
                    listed = await _list_tools(session)
                self._specs, self._names = offered_specs(listed)
                self._session = session
                self._ready.set()
                if not self._closed:
                    await self._stop.wait()
                self._session = None
                for scope in list(self._inflight):
                    scope.cancel()
        except Exception as exc:  # start-up failed or the server went away: said by start/call
            self._failure = exc
        finally:
            self._session = None
            self._ready.set()

    # -- one call ---------------------------------------------------------------------------

    async def _call(self, name: str, arguments: dict[str, Any], timeout: float) -> Any:
        """tools/call on the loop; the result's wire form (camelCase dict), None once closed."""
        import anyio

        session = self._session
        if session is None:
            return None
        with anyio.CancelScope() as scope:
            self._inflight.add(scope)
            try:
                with anyio.fail_after(timeout):
                    result = await session.call_tool(name, arguments)
            finally:
                self._inflight.discard(scope)
            return result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return None  # cancelled by close()

    def _failed(self, error: str, started: float) -> ToolOutcome:
        return ToolOutcome(
            ok=False, text="", error=error, duration_s=time.monotonic() - started, bytes=0
        )

    def _gone(self) -> str:
        if self._closed:
            return f"the MCP server `{self.label}` was closed"
        reason = f": {self._explain(self._failure)}" if self._failure else ""
        return f"the MCP server `{self.label}` has stopped{reason}"

    def _explain(self, exc: BaseException | None, *, stderr: bool = True) -> str:
        """One line for an SDK or OS error, with the last line of the server's stderr."""
        leaf = _first_leaf(exc)
        text = " ".join(str(leaf).split()) if leaf is not None else ""
        text = text or (type(leaf).__name__ if leaf is not None else "unknown error")
        last = self._stderr.last_line()
        return f"{text} (its stderr ends: {last})" if last and stderr else text


def server_env() -> dict[str, str]:
    """The only variables of our environment the server gets (never the API key)."""
    return {name: os.environ[name] for name in ENV_KEPT if name in os.environ}


def offered_specs(
    tools: Sequence[Mapping[str, Any]],
) -> tuple[tuple[ToolSpec, ...], dict[str, str]]:
    """ToolSpecs from tools/list (wire form), with names an OpenAI endpoint accepts."""
    specs: list[ToolSpec] = []
    names: dict[str, str] = {}
    for tool in tools:
        own = str(tool.get("name") or "")
        offered = _TOOL_NAME.sub("_", own)[:64]
        if not offered or offered in names:
            continue  # nameless, or a clash after cleaning: the model could not tell them apart
        schema = tool.get("inputSchema")
        if not isinstance(schema, Mapping) or schema.get("type") != "object":
            schema = {"type": "object", "properties": {}}
        description = str(tool.get("description") or "")[:MAX_DESCRIPTION_CHARS]
        names[offered] = own
        specs.append(ToolSpec(name=offered, description=description, parameters=dict(schema)))
    return tuple(specs), names


def result_text(wire: Mapping[str, Any]) -> str:
    """A tools/call result as text: its content blocks joined, non-text blocks described."""
    parts = [block_text(block) for block in wire.get("content") or ()]
    if not parts and wire.get("structuredContent") is not None:
        parts.append(json.dumps(wire["structuredContent"], ensure_ascii=False))
    return "\n".join(parts)


def block_text(block: Mapping[str, Any]) -> str:
    """One content block as text; a block the model cannot read is described, not dropped."""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind in ("image", "audio"):
        size = len(str(block.get("data", ""))) * 3 // 4
        return (
            f"[{kind} block: {block.get('mimeType', 'unknown type')}, ~{size:,} bytes, not shown]"
        )
    if kind == "resource_link":
        return f"[resource link: {block.get('uri', '')} {block.get('name', '')}]".replace(" ]", "]")
    if kind == "resource":
        resource = block.get("resource") or {}
        uri = resource.get("uri", "")
        if "text" in resource:
            return f"[resource {uri}]\n{resource['text']}"
        return f"[resource {uri}: {resource.get('mimeType', 'binary')}, not shown]"
    return f"[{kind or 'unknown'} block, not shown]"


async def _list_tools(session: Any) -> list[dict[str, Any]]:
    """Every page of tools/list, in wire form."""
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        result = await (session.list_tools() if cursor is None else _next_page(session, cursor))
        wire = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        tools.extend(wire.get("tools") or ())
        cursor = wire.get("nextCursor")
        if not cursor:
            break
    return tools


def _next_page(session: Any, cursor: str) -> Any:
    """list_tools for the page after `cursor` (mcp 2.x takes params=, early 1.x cursor=)."""
    if "params" in inspect.signature(session.list_tools).parameters:
        from mcp.types import PaginatedRequestParams

        return session.list_tools(params=PaginatedRequestParams(cursor=cursor))
    return session.list_tools(cursor=cursor)


def _first_leaf(exc: BaseException | None) -> BaseException | None:
    """The first real error inside (nested) exception groups."""
    while exc is not None and hasattr(exc, "exceptions") and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class _StderrTail:
    """The server's stderr through a pipe, drained by a daemon thread; only its tail is kept."""

    def __init__(self, limit: int) -> None:
        read_fd, write_fd = os.pipe()
        self.writer = os.fdopen(write_fd, "w")  # the SDK makes this the server's stderr
        self._limit = limit
        self._tail = bytearray()
        self._lock = threading.Lock()
        threading.Thread(
            target=self._drain, args=(read_fd,), name="mcp-stderr", daemon=True
        ).start()

    def _drain(self, read_fd: int) -> None:
        try:
            while chunk := os.read(read_fd, 65_536):
                with self._lock:
                    self._tail += chunk
                    del self._tail[: -self._limit]
        finally:
            os.close(read_fd)

    def text(self) -> str:
        """What the server last wrote to stderr (at most the tail)."""
        with self._lock:
            return self._tail.decode("utf-8", "replace")

    def last_line(self) -> str:
        """The last non-empty line the server wrote to stderr, shortened."""
        lines = [line.strip() for line in self.text().splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    def close(self) -> None:
        """Close our end; the drain thread ends when the server's end closes too."""
        self.writer.close()


@atexit.register
def _close_all() -> None:
    """Close every server still open when the interpreter exits (Ctrl-C, an early exit)."""
    for source in list(_OPEN):
        source.close()
