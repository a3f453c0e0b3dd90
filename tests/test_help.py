"""`--help` people can read: options under named headings, readable metavars, help on every
option, whole command summaries, examples; and it stays light (no Rich, no pydantic)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from parallelize.cli.app import app
from parallelize.cli.helpformat import PANELS

COMMANDS = ("section", "vote")
HEAVY = ("pydantic", "rich", "httpcore", "tiktoken", "sqlite3")


def options(command: str) -> list:
    group = typer.main.get_command(app)
    return [p for p in group.commands[command].params if p.param_type_name == "option"]  # type: ignore[attr-defined]


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_a_panel_help_and_a_readable_metavar(command: str) -> None:
    """Freezes the groups: a new option must say where it belongs and what it does."""
    found = options(command)
    assert len(found) > 30
    for option in found:
        name = option.opts[0]
        assert option.rich_help_panel in PANELS, f"{command} {name}: no help panel"
        assert (option.help or "").strip(), f"{command} {name}: no help text"
        if not option.is_flag:
            assert option.metavar, f"{command} {name}: no metavar"
            assert "<" not in option.metavar and "[str]" not in option.metavar, name


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_the_panels_in_order_and_no_type_names(command: str) -> None:
    text = help_text(command)
    headings = re.findall(r"^(\S[^:\n]*):$", text, re.M)
    shown = [h for h in headings if h in PANELS]
    assert shown == [p for p in PANELS if p in shown] and len(shown) >= 4  # in PANELS order
    assert "Engine and limits" in shown and "Output" in shown and "Prompt and model" in shown
    assert not re.search(r"<[a-z]|\[str\]|list\[|int range|x>=", text)  # Typer's type names
    assert "\nExamples:\n  parallelize " in text or "\nExamples:\n  git " in text
    for option in options(command):  # every option has its row
        longest = re.escape(max(option.opts, key=len))
        assert re.search(rf"^  (-\w, )?{longest}( |$)", text, re.M), longest


def test_section_groups_its_inputs_chunking_and_merge_options() -> None:
    text = help_text("section")
    inputs = text.split("\nInputs:\n", 1)[1].split("\n\n", 1)[0]
    chunking = text.split("\nChunking:\n", 1)[1].split("\n\n", 1)[0]
    merge = text.split("\nMerge:\n", 1)[1].split("\n\n", 1)[0]
    assert "--include GLOB" in inputs and "--on-secret redact|fail" in inputs
    assert "-c, --chunks N" in chunking and "--context-window TOKENS" in chunking
    assert "--merge concat|llm|json|files" in merge
    assert "-t, --temperature T" in text and "Sampling temperature" in text


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("section", "[OPTIONS] [PATH]..."),
        ("vote", "[OPTIONS] [TASK]"),
        ("report", "[OPTIONS] RUN"),  # required: plain, never Typer's {RUN}
    ],
)
def test_the_usage_line_names_each_argument_plainly(command: str, usage: str) -> None:
    first = help_text(command).splitlines()[0]
    assert re.fullmatch(rf"Usage: \S+ {command} {re.escape(usage)}", first), first


def test_report_help_has_readable_metavars_help_and_examples() -> None:
    text = help_text("report")
    assert "{" not in text and "\nExamples:\n  parallelize " in text
    assert not re.search(r"<[a-z]|\[str\]", text)  # Typer's type names
    for option in options("report"):
        name = option.opts[0]
        assert (option.help or "").strip(), f"report {name}: no help text"
        assert option.is_flag or option.metavar == "FILE", name
    assert re.search(r"^  RUN +A run's document", text, re.M)


def test_the_app_lists_whole_command_summaries() -> None:
    text = help_text()
    commands = text.split("\nCommands:\n", 1)[1]
    assert "..." not in commands  # no summary cut short
    flat = " ".join(commands.split())
    assert "Split PATH (files, directories or stdin) into chunks" in flat and "DATA" not in flat
    assert "judge, rubric, consensus or weighted" in flat
    assert "List the built-in recipes with their descriptions." in flat


@pytest.mark.parametrize("args", [["section", "--help"], ["vote", "--help"]])
def test_command_help_imports_nothing_heavy(args: list[str]) -> None:
    """Typer's --help flag left None was coerced through pydantic on every `COMMAND --help`."""
    probe = (
        "import sys\n"
        "sys.argv = ['parallelize', *sys.argv[1:]]\n"
        "from parallelize.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60
    )
    assert "Engine and limits:" in run.stdout
    assert run.stderr.strip().splitlines()[-1] == "loaded:"
