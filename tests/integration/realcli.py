"""The installed entry point as a new user runs it against a real server: a clean environment
with only the endpoint (and a key when given), a cache and a home of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENTRY = Path(sys.executable).with_name("parallelize")


def run_cli(
    base_url: str, cwd: Path, *args: str, key: str | None = "x", timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """`parallelize ARGS` in `cwd` (PYTHONPATH passes through: a test can run older code)."""
    env = {
        "OPENAI_BASE_URL": base_url,
        "NO_PROXY": "127.0.0.1",
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd / "home"),
        "PARALLELIZE_CACHE_DIR": str(cwd / "cache"),
        "TIKTOKEN_CACHE_DIR": os.environ.get("TIKTOKEN_CACHE_DIR", ""),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    if key is not None:
        env["OPENAI_API_KEY"] = key
    return subprocess.run(
        [str(ENTRY), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )
