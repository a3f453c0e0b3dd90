"""How `--help` reads: options under headings, readable metavars, whole command summaries and
examples.

Plain text through Typer's own formatter: Rich's help would cost `--help` its import time. The
headings are the options' `rich_help_panel`, so Typer's Rich help would group them the same way.
"""

from __future__ import annotations

import inspect
import re
from enum import Enum
from typing import TYPE_CHECKING, Any

from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from typer import _click  # Typer's own click: its types only

INPUTS = "Inputs"
CHUNKING = "Chunking"
PROMPT = "Prompt and model"
MERGE = "Merge"
VOTING = "Voting"
OUTPUT = "Output"
ENGINE = "Engine and limits"
TOOLS = "Tools"
#: The headings in the order `--help` shows them; an option without one goes under "Options".
PANELS = (INPUTS, CHUNKING, PROMPT, MERGE, VOTING, TOOLS, OUTPUT, ENGINE)
OTHER = "Options"

#: Typer's usage form of a required argument: `{RUN}`, `{PATH}...`.
_REQUIRED = re.compile(r"^\{([^{}]+)\}")

#: The widest option column; a longer one puts its help on the next line.
OPTION_COLUMN = 30


class HelpCommand(TyperCommand):
    """A command whose --help groups its options under PANELS and ends with examples."""

    def collect_usage_pieces(self, ctx: _click.Context) -> list[str]:
        """`[OPTIONS] RUN`: a required argument as its plain name (Typer writes `{RUN}`)."""
        return [_REQUIRED.sub(r"\1", piece) for piece in super().collect_usage_pieces(ctx)]

    def format_options(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        """Arguments first, then one section per panel, the columns aligned across sections."""
        params = [p for p in self.get_params(ctx) if not getattr(p, "hidden", False)]
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in params:
            if param.param_type_name == "argument":
                groups.setdefault("Arguments", []).append(_argument_row(param))
            else:
                panel = getattr(param, "rich_help_panel", None) or OTHER
                groups.setdefault(panel, []).append(_option_row(param))
        rows = [row for found in groups.values() for row in found]
        width = min(max((len(name) for name, _ in rows), default=0), OPTION_COLUMN)
        for heading in ("Arguments", *PANELS, *groups.keys()):
            found = groups.pop(heading, None)
            if found:
                with formatter.section(heading):
                    formatter.write_dl([(name.ljust(width), text) for name, text in found])

    def format_epilog(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        """The epilog as written (examples keep their lines), under `Examples`."""
        if not self.epilog:
            return
        formatter.write_paragraph()
        formatter.write_heading("Examples")
        for line in inspect.cleandoc(self.epilog).splitlines():
            formatter.write(f"  {line}".rstrip() + "\n")

    def get_help_option(self, ctx: _click.Context) -> Any:
        return _help_flag(super().get_help_option(ctx))


class HelpGroup(TyperGroup):
    """The app: each command listed with its whole summary (Typer's cuts it at ~45 characters)."""

    def format_commands(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, summary(command)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_help_option(self, ctx: _click.Context) -> Any:
        return _help_flag(super().get_help_option(ctx))


def summary(command: _click.Command) -> str:
    """A command's short help, else the first paragraph of its help, on one line."""
    text = command.short_help or (command.help or "").partition("\f")[0]
    return " ".join(inspect.cleandoc(text).split("\n\n", 1)[0].split())


def _help_flag(option: Any) -> Any:
    """--help as a flag that defaults to False: Typer leaves it None, and coercing None loads
    pydantic (about 0.1 s) for every `COMMAND --help`, through the app's own --help option."""
    if option is not None and option.default is None:
        option.default = False
    return option


def _argument_row(param: _click.Parameter) -> tuple[str, str]:
    name = (param.metavar or (param.name or "").upper()) + ("..." if param.nargs != 1 else "")
    return name, getattr(param, "help", None) or ""


def _option_row(param: _click.Parameter) -> tuple[str, str]:
    """`-p, --prompt TEXT` and its help, with the default when the option shows one."""
    option: Any = param
    names = ", ".join(sorted(option.opts, key=lambda name: name.startswith("--")))  # -p, --prompt
    if option.secondary_opts:
        names += " / " + ", ".join(option.secondary_opts)
    if not option.is_flag and not option.count:
        names += f" {option.metavar or (option.name or 'value').upper()}"
    text = option.help or ""
    if option.show_default and option.default is not None and not option.is_flag:
        text += f"  [default: {_shown(option.default)}]"
    return names, text


def _shown(value: Any) -> str:
    """A default as the user would type it: an enum's value, a float without a needless `.0`."""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
