"""Fixtures for tests against a REAL OpenAI-compatible server (llama.cpp's
llama-server with a tiny random-weight model, see tools/realserver/).

These tests are not part of the default `pytest tests/` run; run them with
`make test-real`, which builds the server first (tools/realserver/build.sh).
A missing build is a failure, never a skip.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "realserver"))
import serve  # tools/realserver/serve.py: find_build, start_server

HERE = Path(__file__).resolve().parent
# The build cache is only read. tests/conftest.py moved HOME and XDG_CACHE_HOME into a temporary
# directory and set PARALLELIZE_REALSERVER_DIR to where build.sh put the build; read it now: that
# conftest scrubs PARALLELIZE_* from each test's environment.
REALSERVER_DIR = serve.cache_root()
SCRUB_PREFIXES = ("OPENAI_",)
SCRUB_NAMES = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs the real llama-server (make test-real)")


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def real_build() -> tuple[Path, Path]:
    """(llama-server binary, model.gguf) from the build cache; fails if absent."""
    found = serve.find_build(REALSERVER_DIR)
    if found is None:
        pytest.fail(
            f"no real server build in {REALSERVER_DIR}: "
            "run `make test-real` (tools/realserver/build.sh) first",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def real_server(real_build):
    """llama-server with 8 slots x 512 tokens; .base_url is http://127.0.0.1:PORT/v1.

    Any model name is accepted; /v1/models lists serve.ALIAS ("tiny-llama").
    Other slot counts: serve.start_server(*real_build, slots=N) in a test.
    """
    try:
        srv = serve.start_server(*real_build, slots=8, ctx_per_slot=512)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def server_4k(real_build):
    """llama-server with 4 slots x 4,096 tokens: the window a new user's local server has."""
    try:
        srv = serve.start_server(*real_build, slots=4, ctx_per_slot=4096)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No real OpenAI settings or proxies leak into a test; loopback bypasses proxies."""
    for name in list(os.environ):
        if name.upper().startswith(SCRUB_PREFIXES) or name.upper() in SCRUB_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
