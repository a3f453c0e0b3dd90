"""Shared fixtures: one loopback OpenAI-compatible server per session, a clean environment,
and a home of the suite's own.

HOME, the XDG directories and PARALLELIZE_CACHE_DIR point into a temporary directory from the
moment this file is imported (before any test module, some of which count tokens at import), so
no cache row or tiktoken copy lands in the user's own ~/.cache/parallelize; a session guard
fails the run if that directory changed anyway.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from homes import REAL_CACHE, changes, snapshot  # first: it reads the real home
from llmserver import LLMServer

SECRET_ENV_PREFIXES = ("OPENAI_", "AZURE_OPENAI", "PARALLELIZE_")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
#: Set by a GitHub Actions runner: a test run there must not annotate the job or write its summary.
GITHUB_VARS = ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_WORKSPACE")

#: The llama.cpp build of `make test-real` (tools/realserver/build.sh) stays where it was built
#: and is only read: found from the real home before HOME moves.
os.environ.setdefault(
    "PARALLELIZE_REALSERVER_DIR",
    str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "parallelize/realserver"
    ),
)
SUITE_HOME = Path(tempfile.mkdtemp(prefix="parallelize-tests-home-"))
atexit.register(shutil.rmtree, SUITE_HOME, ignore_errors=True)
os.environ["HOME"] = str(SUITE_HOME)
for name, folder in (
    ("XDG_CACHE_HOME", ".cache"),
    ("XDG_CONFIG_HOME", ".config"),
    ("XDG_DATA_HOME", ".local/share"),
    ("XDG_STATE_HOME", ".local/state"),
):
    os.environ[name] = str(SUITE_HOME / folder)
os.environ["PARALLELIZE_CACHE_DIR"] = str(SUITE_HOME / "parallelize-cache")
#: Taken at import: collecting the test modules is part of the run.
REAL_CACHE_BEFORE = snapshot(REAL_CACHE)


@pytest.fixture(scope="session", autouse=True)
def real_cache_untouched() -> Iterator[None]:
    """Fail the run if the user's own ~/.cache/parallelize changed while the suite ran."""
    yield
    changed = changes(REAL_CACHE_BEFORE, snapshot(REAL_CACHE))
    if changed:
        pytest.fail(f"the test suite changed {REAL_CACHE}: {', '.join(changed[:5])}")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No real key, endpoint or proxy can leak into a test; caches go to a temp dir."""
    for name in list(os.environ):
        if name.startswith(SECRET_ENV_PREFIXES) or name in PROXY_VARS or name in GITHUB_VARS:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("PARALLELIZE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("TERM", "dumb")


@pytest.fixture(scope="session")
def _session_server() -> Iterator[LLMServer]:
    with LLMServer() as server:
        yield server


@pytest.fixture
def llm(_session_server: LLMServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[LLMServer]:
    """The loopback server, reset for this test, with OPENAI_BASE_URL pointing at it."""
    _session_server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", _session_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-loopback-key-0000")
    yield _session_server
    _session_server.reset()


@pytest.fixture
def entry_point() -> str:
    """The installed `parallelize` console script next to this interpreter."""
    script = Path(sys.executable).with_name("parallelize")
    found = str(script) if script.exists() else shutil.which("parallelize")
    assert found, "the parallelize entry point is not installed (run `make install`)"
    return found


@pytest.fixture
def make_tree(tmp_path: Path):
    """Create files (relative path -> text) under tmp_path/name and return that directory."""

    def make(files: dict[str, str], name: str = "src") -> Path:
        root = tmp_path / name
        root.mkdir(exist_ok=True)
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root

    return make
