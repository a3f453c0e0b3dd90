"""`make serve-real` on the real llama.cpp server: the tool's defaults work against it, and once
it is gone, the installed entry point says so at once (exit 2), not after a minute of retries."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import serve  # tools/realserver/serve.py, on the path through conftest
from realcli import run_cli


def parallelize(base_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed entry point with only OPENAI_BASE_URL set, as the README's export leaves."""
    return run_cli(base_url, cwd, *args, key=None, timeout=300)


def test_serve_real_fits_the_defaults_then_a_stopped_server_is_exit_2_at_once(
    real_build, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"m{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n", encoding="utf-8")
    args = ["section", "src", "-p", "List the functions", "--max-tokens", "8", "--format", "json"]
    with serve.start_usable(*real_build, port=0) as server:  # what `make serve-real` runs
        assert server.process.args[server.process.args.index("-n") + 1] == "1024"
        props = server.get_json("/props")
        assert props["total_slots"] == serve.USABLE_SLOTS
        # 8,192 asked; llama-server caps a slot at the tiny model's training context
        assert props["default_generation_settings"]["n_ctx"] >= 4096
        assert serve.export_line(server) == f"export OPENAI_BASE_URL={server.base_url}"
        ran = parallelize(server.base_url, tmp_path, *args)  # no model, no window: asked
        assert ran.returncode == 0, ran.stderr
        doc = json.loads(ran.stdout)
        assert doc["model"] == serve.ALIAS and doc["recipe"] == "custom"
        assert doc["context_window"] >= 4096 and "props" in doc["context_window_source"]
    for flags in ([], ["-m", serve.ALIAS, "--context-window", "4096"]):
        started = time.monotonic()
        gone = parallelize(server.base_url, tmp_path, *args, "--no-cache", *flags)
        assert time.monotonic() - started < 10
        assert gone.returncode == 2, gone.stderr
        assert f"cannot reach {server.base_url}: connection refused" in gone.stderr
