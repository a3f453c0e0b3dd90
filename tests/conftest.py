"""Shared fixtures: one loopback OpenAI-compatible server per session, a clean environment."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from llmserver import LLMServer

SECRET_ENV_PREFIXES = ("OPENAI_", "AZURE_OPENAI", "PARALLELIZE_")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No real key, endpoint or proxy can leak into a test; caches go to a temp dir."""
    for name in list(os.environ):
        if name.startswith(SECRET_ENV_PREFIXES) or name in PROXY_VARS:
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
