"""The default `section` on a real llama.cpp server with realistic 4,096-token slots: the window
and the counter come from the server (its /props and /tokenize), the dry run plans what the run
sends, and a re-run with every call cached needs no server at all (issue 13, items 1 and 2)."""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import serve

ENTRY = Path(sys.executable).with_name("parallelize")


def section(root: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    args = [str(ENTRY), "section", str(root), "-p", "Summarize", "--format", "json", *extra]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)


def test_the_default_section_of_a_package_fits_real_slots_and_reruns_without_a_server(
    real_build, tmp_path: Path
) -> None:
    root = tmp_path / "email"
    shutil.copytree(Path(email.__file__).parent, root, ignore=shutil.ignore_patterns("*.pyc"))
    named = sorted(str(p) for p in root.rglob("*.py") if p.stat().st_size)
    server = serve.start_server(*real_build, slots=4, ctx_per_slot=4096)
    env = {
        **os.environ,
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "x",
        "PARALLELIZE_CACHE_DIR": str(tmp_path / "cache"),
    }
    try:
        dry = section(root, env, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        planned = json.loads(dry.stdout)
        assert planned["counter"] == "server" and planned["counter_margin"] == 0
        assert planned["context_window"] == 4096 and "tokenizer" in planned["plan_facts"]
        run = section(root, env)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    done = json.loads(run.stdout)
    assert len(done["tasks"]) == len(planned["plan"]) > 29  # the dry run planned what was sent
    assert [t["paths"] for t in done["tasks"]] == [t["paths"] for t in planned["plan"]]
    assert {t["status"] for t in done["tasks"]} <= {"ok", "truncated"}  # the tiny model rambles
    for path in named:
        assert path in done["result"], f"{path} is not named in the output"
    again = section(root, env)  # the server is stopped: every fact, count and call is cached
    assert again.returncode == 0, again.stderr[-2000:]
    cached = json.loads(again.stdout)
    assert cached["result"] == done["result"] and cached["engine"]["requests"] == 0
    assert "remembered" in cached["plan_facts"]
