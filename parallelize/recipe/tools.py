"""The recipe's `tools:` entries: the built-in `fs` tools, declared commands and MCP servers.

A command is an argv template run without a shell: each `{{ name }}` stands for one whole
argument and names one of the tool's own parameters, so a model can fill in values but never
add words, options or pipes. Checked when the recipe is validated, before anything runs.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Strict
from .limits import PLACEHOLDER

#: The tool families that need no declaration (`- fs` in a recipe, `--tools fs`).
BUILTIN_TOOLS = ("fs",)
#: Model rounds a worker may spend calling tools before it must answer.
DEFAULT_MAX_TOOL_ROUNDS = 8
#: The longest a declared command may be given, in seconds.
MAX_COMMAND_TIMEOUT = 600.0
#: What OpenAI allows as a function name.
TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"
#: A placeholder that is a whole argument (and nothing else).
_WHOLE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")

Builtin = Literal["fs"]


class CommandTool(Strict):
    """A command the model may run: its argv template is filled with whole arguments."""

    name: str = Field(pattern=TOOL_NAME, description="the tool's name as the model sees it")
    description: str = Field(min_length=1, description="what it does, for the model")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema of the arguments (an object)",
    )
    command: list[str] = Field(min_length=1, description="argv; {{ param }} is one argument")
    timeout: float = Field(30.0, gt=0, le=MAX_COMMAND_TIMEOUT, description="seconds")

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        if schema.get("type") != "object":
            raise ValueError("parameters must be a JSON schema of type object")
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError("parameters.properties must be a mapping of names to schemas")
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"parameters is not a valid JSON schema: {exc.message}") from None
        return schema

    @model_validator(mode="after")
    def _template_names_own_parameters(self) -> CommandTool:
        declared = set(self.parameters.get("properties", {}))
        for index, part in enumerate(self.command):
            if "\0" in part:
                raise ValueError(f"command[{index}] contains a NUL character")
            names = PLACEHOLDER.findall(part)
            if not names:
                continue
            whole = _WHOLE.match(part)
            if whole is None:
                raise ValueError(
                    f"command[{index}] = {part!r} mixes a placeholder with other text; a "
                    "placeholder must be a whole argument (e.g. [--since, '{{ date }}'])"
                )
            if index == 0:
                raise ValueError("command[0] is the program: it cannot be a placeholder")
            if whole[1] not in declared:
                raise ValueError(
                    f"command[{index}] names '{whole[1]}', which is not one of this tool's "
                    f"parameters ({', '.join(sorted(declared)) or 'none declared'}); declare it "
                    "under parameters.properties"
                )
        return self


class McpTool(Strict):
    """An MCP server over stdio: every tool it lists is offered."""

    mcp: list[str] = Field(min_length=1, description="argv that starts the server")


ToolEntry = Builtin | CommandTool | McpTool


def entry_name(entry: ToolEntry) -> str:
    """How an entry is named in messages and the dry run."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, CommandTool):
        return entry.name
    return "mcp: " + " ".join(entry.mcp)


def parse_tool_entries(raw: Any) -> Any:
    """Each entry as its own kind (a name, a command, an MCP server), so that a mistake is
    reported once, against the kind it is meant to be, not against every kind at once."""
    if not isinstance(raw, list):
        return raw
    from pydantic import ValidationError

    entries: list[ToolEntry] = []
    for index, item in enumerate(raw):
        if isinstance(item, str):
            if item not in BUILTIN_TOOLS:
                raise ValueError(
                    f"[{index}]: unknown built-in tool '{item}' (choose from: "
                    f"{', '.join(BUILTIN_TOOLS)}; declare a command with name:, description: "
                    "and command:, or an MCP server with mcp:)"
                )
            entries.append(item)  # type: ignore[arg-type]  # checked against BUILTIN_TOOLS
            continue
        kind: type[Strict] = McpTool if isinstance(item, dict) and "mcp" in item else CommandTool
        try:
            entries.append(kind.model_validate(item))  # type: ignore[arg-type]  # one of both
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            raise ValueError(f"[{index}]{'.' + where if where else ''}: {message}") from None
    return entries


def check_tool_entries(entries: list[ToolEntry]) -> list[ToolEntry]:
    """Each built-in once, each command name once."""
    seen: set[str] = set()
    for entry in entries:
        key = entry if isinstance(entry, str) else getattr(entry, "name", None)
        if key is None:
            continue
        if key in seen:
            raise ValueError(f"tool '{key}' is listed twice; list it once")
        seen.add(key)
    return entries
