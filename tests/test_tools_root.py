"""The root tools see (issue 15): one folder PATH, a single file's folder, or --tool-root; never
the working directory by default. Credential files stay out, and a huge root is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llmserver import LLMServer
from test_tools import call, first_round, tool_messages
from typer.testing import CliRunner

from parallelize.cli import app
from parallelize.inputs.walk import PathRules
from parallelize.tools.fs import FsTools
from parallelize.tools.root import RootFiles

CREDENTIALS = {
    ".bash_history": "mysql -p hunter2\n",
    ".zsh_history": "export TOKEN=x\n",
    ".kube/config": "users: []\n",
    ".docker/config.json": "{}\n",
    ".config/gh/hosts.yml": "github.com: {}\n",
    ".npmrc": "//registry.npmjs.org/:_authToken=x\n",
    ".pypirc": "[pypi]\n",
}


@pytest.fixture
def home(make_tree: Any) -> Path:
    return make_tree({**CREDENTIALS, "notes.txt": "hello\n", "src/app.py": "x = 1\n"}, "home")


def test_credential_files_are_neither_inputs_nor_tool_files(home: Path) -> None:
    assert sorted(RootFiles(str(home)).files()) == ["notes.txt", "src/app.py"]
    rules = PathRules()
    for name in CREDENTIALS:
        if name not in (".npmrc", ".pypirc"):  # inputs skip these when a token is in them
            assert rules.file_reason(str(home / name), name) == "secret-file", name


def test_a_root_too_large_to_list_is_a_tool_error_not_a_hang(home: Path) -> None:
    root = RootFiles(str(home))
    root.max_files = 1
    outcome = FsTools(root).call("list_dir", {"path": "."}, timeout=5)
    assert not outcome.ok and "holds more than 1 files" in (outcome.error or "")
    assert "--tool-root" in (outcome.error or "")
    again = FsTools(root).call("read_file", {"path": "notes.txt"}, timeout=5)
    assert not again.ok and "holds more than" in (again.error or "")  # not walked again


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, [*args, "-m", "test-model", "--no-cache"])


def test_fs_without_a_clear_root_is_refused_naming_the_flag(home: Path) -> None:
    for args in (
        ["section", str(home / "notes.txt"), str(home / "src"), "--tools", "fs"],
        ["section", "-", "--tools", "fs"],
        ["vote", "what is 2+2?", "--tools", "fs"],
    ):
        done = cli(*args)
        assert done.exit_code == 2, done.output
        assert "--tool-root DIR" in done.output and "Traceback" not in done.output
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "--tools fs" in errors[0]


def test_a_single_file_offers_its_own_folder_not_the_working_directory(
    llm: LLMServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(home)  # the working directory is the home folder
    llm.script(first_round, tool_calls=[call("list_dir")])
    llm.script(None, "ok")
    done = cli("section", "src/app.py", "--tools", "fs")
    assert done.exit_code == 0, done.output
    assert tool_messages(llm.requests[-1].body)[0]["content"].splitlines()[1:-1] == ["app.py"]


def test_tool_root_names_the_folder_for_vote_and_several_paths(llm: LLMServer, home: Path) -> None:
    llm.script(first_round, tool_calls=[call("read_file", path="app.py")])
    llm.script(None, lambda body: "saw " + json.dumps("x = 1" in json.dumps(body)))
    root = str(home / "src")
    done = cli("vote", "what is x?", "-n", "1", "--tools", "fs", "--tool-root", root)
    assert done.exit_code == 0, done.output
    assert "saw true" in done.stdout
    llm.reset()
    llm.script(first_round, tool_calls=[call("list_dir")])
    llm.script(None, "ok")
    paths = [str(home / "notes.txt"), str(home / "src" / "app.py")]
    done = cli("section", *paths, "--tools", "fs", "--tool-root", root)
    assert done.exit_code == 0, done.output
    listed = [tool_messages(r.body) for r in llm.requests if tool_messages(r.body)]
    assert listed and all(m[0]["content"].splitlines()[1:-1] == ["app.py"] for m in listed)
