"""A tiny MCP server over stdio, written with the official SDK, for the MCP tool-source tests.

Run as `python tests/mcpserver.py`. `sleep_then_echo` records when each call starts and ends and
`events` returns that log, so a test can see calls overlap without timing anything.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys

try:  # mcp 2.x renamed FastMCP to MCPServer
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as MCPServer
    from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import ImageContent, TextContent

server = MCPServer("parallelize-test")
EVENTS: list[str] = []


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def sleep_then_echo(seconds: float, text: str) -> str:
    """Sleep, then return the text; the start and the end are logged for `events`."""
    EVENTS.append(f"start {text}")
    await asyncio.sleep(seconds)
    EVENTS.append(f"end {text}")
    return text


@server.tool()
def events() -> str:
    """The start/end log of every sleep_then_echo call so far, as a JSON list."""
    return json.dumps(EVENTS)


@server.tool()
def fail(reason: str) -> str:
    """Always fails: the SDK answers with isError and the reason."""
    raise ToolError(reason)


@server.tool()
def crash() -> str:
    """The server process dies mid-call, after a last word on stderr."""
    print("mcpserver: crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Never returns (a tool stuck past every timeout)."""
    await asyncio.sleep(3600)
    return "unreachable"


@server.tool()
def environment() -> str:
    """The server's whole environment, as JSON."""
    return json.dumps(dict(os.environ))


@server.tool()
def info() -> str:
    """The server's pid and working directory, as JSON."""
    return json.dumps({"pid": os.getpid(), "cwd": os.getcwd()})


@server.tool()
def big(size: int) -> str:
    """A text of `size` characters."""
    return "x" * size


@server.tool()
def noisy(size: int) -> str:
    """Writes `size` bytes to stderr, then answers."""
    sys.stderr.write("e" * size + "\n")
    sys.stderr.flush()
    return "done"


@server.tool()
def picture() -> list[TextContent | ImageContent]:
    """A text block and an image block."""
    png = base64.b64encode(b"\x89PNG fake").decode()
    return [
        TextContent(type="text", text="a caption"),
        ImageContent(type="image", data=png, mimeType="image/png"),
    ]


if __name__ == "__main__":
    server.run()
