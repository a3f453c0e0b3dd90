"""Start-up stays light: `--help` and `--version` import none of the heavy modules, a run in a
pipe or a CI log does without Rich (and, on an http:// server, without httpx), and the entry point
leaves without the interpreter's teardown.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from llmserver import LLMServer

HEAVY = ("httpx", "httpcore", "pydantic", "tiktoken", "openai", "rich", "sqlite3", "platformdirs")
# Runs the Typer app (not the entry point, which leaves with os._exit) and reports what loaded.
PROBE = """
import sys
sys.argv = ["parallelize", *sys.argv[1:]]
from parallelize.cli import app
try:
    app()
except SystemExit:
    pass
print("loaded:" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def loaded(args: list[str], heavy: tuple[str, ...]) -> tuple[subprocess.CompletedProcess, list]:
    """Run the app in a fresh interpreter; which of `heavy` it imported."""
    run = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=heavy), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("loaded:"), run.stderr
    return run, [m for m in last.removeprefix("loaded:").split(",") if m]


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    run, heavy = loaded(args, HEAVY)
    assert run.stdout  # the help or version text was printed ...
    assert heavy == []  # ... and nothing heavy loaded


def test_a_run_outside_a_terminal_does_without_rich(llm: LLMServer, make_tree) -> None:
    tree = make_tree({"a.txt": "alpha\n", "b.txt": "beta\n"})
    args = ["section", str(tree), "--by", "file", "-p", "Sum up", "-m", "test-model"]
    run, heavy = loaded(args, HEAVY)
    assert run.returncode == 0 and "summary: 2 chunks" in run.stderr  # progress and summary ...
    assert "rich" not in heavy and "httpcore" in heavy  # ... printed without Rich
    assert "httpx" not in heavy and "openai" not in heavy  # an http:// server needs no TLS


def test_the_entry_point_flushes_and_keeps_the_exit_code(
    llm: LLMServer, make_tree, entry_point: str
) -> None:
    """It leaves with os._exit: everything printed must still arrive, and the code must hold."""
    tree = make_tree({f"f{i}.txt": f"MARKER-{i}\n" for i in range(50)})
    llm.script("MARKER-7", status=400)  # one call fails: exit 1
    run = subprocess.run(
        [entry_point, "section", str(tree), "--by", "file", "-p", "Sum up", "-m", "test-model"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert all(f"MARKER-{i}" in run.stdout for i in range(50) if i != 7)
    assert run.stderr.rstrip().splitlines()[-2].startswith("summary: 50 chunks")
    missing = str(tree / "missing")
    args = [entry_point, "section", missing, "-p", "x"]
    bad = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith(f"error: path not found: {missing}")
