"""The suite never writes into the user's home: HOME, the XDG directories and the cache are the
suite's own, and a run without PARALLELIZE_CACHE_DIR writes only under the HOME it is given."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import platformdirs
from homes import REAL_CACHE, changes, snapshot
from llmserver import LLMServer

from parallelize.defaults import default_cache_dir


def test_the_suite_has_a_home_of_its_own() -> None:
    home = Path(os.environ["HOME"])
    assert not REAL_CACHE.resolve().is_relative_to(home.resolve())
    assert Path(platformdirs.user_cache_dir("parallelize")).is_relative_to(home)
    assert Path(os.environ["XDG_CACHE_HOME"]).is_relative_to(home)
    assert not default_cache_dir().resolve().is_relative_to(REAL_CACHE.resolve())


def test_a_run_without_a_cache_dir_writes_only_under_its_home(
    llm: LLMServer, make_tree, entry_point: str, tmp_path: Path
) -> None:
    """The tool's default cache is under HOME: with HOME the suite's, the user's stays as it was."""
    tree = make_tree({"a.txt": "alpha\n", "b.txt": "beta\n"})
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes/keep.txt").write_text("mine\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-test-loopback-key-0000",
        "NO_PROXY": "127.0.0.1",
    }
    real_before, home_before = snapshot(REAL_CACHE), snapshot(home)
    args = [entry_point, "section", str(tree), "--by", "file", "-p", "Sum up {{ input }}"]
    run = subprocess.run(
        [*args, "-m", "test-model", "--tokenizer", "estimate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert changes(real_before, snapshot(REAL_CACHE)) == []  # the user's cache: untouched
    made = changes(home_before, snapshot(home))
    assert "added: .cache/parallelize/calls.sqlite3" in made  # the default cache is under HOME
    assert all(line.startswith("added: .cache") for line in made if line != "changed: ."), made
