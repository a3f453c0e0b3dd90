"""Rendering: model text is never Rich markup, and an unwritable -o never loses the result."""

from __future__ import annotations

from pathlib import Path

from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app


def test_markup_like_model_text_is_printed_literally(llm: LLMServer) -> None:
    llm.script(None, "Edit the [/etc/hosts] file [bold]now")
    args = ["vote", "task", "-n", "2", "--strategy", "consensus"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "Edit the [/etc/hosts] file [bold]now" in result.stderr  # the table's preview
    assert result.stdout == "Edit the [/etc/hosts] file [bold]now\n"


def test_unwritable_output_prints_the_result_and_exits_2(llm: LLMServer, make_tree) -> None:
    root = make_tree({"a.txt": "MARKER-A\n"})
    target = Path("/proc/no/such/dir/out.md")
    result = CliRunner().invoke(app, ["section", str(root), "-o", str(target), "-q"])
    assert result.exit_code == 2
    assert "MARKER-A" in result.stdout
    assert f"error: --output {target}: cannot write" in result.stderr
    assert "Traceback" not in result.stderr


def test_output_file_is_replaced_atomically(llm: LLMServer, make_tree, tmp_path: Path) -> None:
    root = make_tree({"a.txt": "MARKER-B\n"})
    out = tmp_path / "out.md"
    out.write_text("old")
    result = CliRunner().invoke(app, ["section", str(root), "-o", str(out), "-q"])
    assert result.exit_code == 0 and "MARKER-B" in out.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name != "src"] == ["out.md"]


def test_a_path_template_without_input_files_names_the_key(llm: LLMServer) -> None:
    args = ["section", "--recipe", "translate", "--each", "locale=fr-FR", "--out-dir", "out"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "merge.path: {{ path }} needs one input file per section" in result.stderr
    assert llm.all_requests == []
