"""The shape every tool source shares: what the model is offered and what one call returned."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolSpec:
    """One tool the model is offered: its name, what it does and its JSON-schema parameters."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    def offer(self) -> dict[str, Any]:
        """The OpenAI `tools` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


@dataclass(frozen=True)
class ToolOutcome:
    """What one call returned; an error is an outcome too (the model reads it), never raised."""

    ok: bool
    text: str  # already bounded (truncated with a note), not yet scanned or framed
    error: str | None = None
    duration_s: float = 0.0
    bytes: int = 0


class ToolSource(Protocol):
    """A family of tools: the fs tools, one declared command, or one MCP server."""

    def specs(self) -> Sequence[ToolSpec]:
        """The tools this source offers."""
        ...

    def call(self, name: str, arguments: Mapping[str, Any], *, timeout: float) -> ToolOutcome:
        """Run one tool; never raises for the tool's own failures."""
        ...

    def close(self) -> None:
        """Release what the source holds (a server process, a pool)."""
        ...
