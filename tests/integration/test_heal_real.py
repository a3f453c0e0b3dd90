"""Issue 13 on a real llama.cpp server with 4,096-token slots: refused chunks heal, and a
map-reduce reaches one output as planned (random weights: mechanics only)."""

from __future__ import annotations

import email
import json
import shutil
from pathlib import Path

from realcli import run_cli

#: The biggest modules of the standard library's email package: several chunks of 8,000
#: tokens, each longer than a 4,096-token slot.
EMAIL_FILES = ("_header_value_parser.py", "message.py", "utils.py", "feedparser.py", "header.py")


def run(srv, tmp_path: Path, *args: str) -> tuple[int, dict]:
    done = run_cli(srv.base_url, tmp_path, "section", *args, "--format", "json", "-q")
    doc = json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr}
    return done.returncode, doc


def test_chunks_longer_than_the_slot_heal_and_a_rerun_sends_nothing(server_4k, tmp_path) -> None:
    root = tmp_path / "email"
    root.mkdir()
    for name in EMAIL_FILES:
        shutil.copy(Path(email.__file__).parent / name, root / name)
    args = [str(root), "-p", "Summarize", "--max-tokens", "16", "--context-window", "8192"]
    code, doc = run(server_4k, tmp_path, *args)
    assert code == 0, doc
    split = [t for t in doc["tasks"] if t.get("split")]
    assert split and all(t["label"].endswith(f"({t['split']} parts)") for t in split)
    assert all(t["status"] in ("ok", "truncated") for t in doc["tasks"])
    named = {Path(p).name for t in doc["tasks"] for p in t["paths"]}
    assert named == set(EMAIL_FILES)
    assert all(f"({t['split']} parts): " in doc["result"] for t in split)

    again_code, again = run(server_4k, tmp_path, *args)
    assert again_code == 0 and again["engine"]["requests"] == 0  # no refused request again
    assert again["result"] == doc["result"]


def test_map_reduce_reaches_one_output_as_planned(server_4k, tmp_path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    for i in range(24):
        body = "".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n" for j in range(20))
        (root / f"mod_{i:02d}.py").write_text(body, encoding="utf-8")
    args = [str(root), "-p", "Summarize", "--by", "file", "--merge", "llm", "--max-tokens", "160"]
    code, doc = run(server_4k, tmp_path, *args)
    assert code == 0, doc
    merge = doc["merge"]
    assert merge["depth"] >= 2 and len(merge["levels"][-1]) == 1  # a tree, ending in one call
    assert not [w for w in doc["warnings"] if "fell back" in w]
    plan = merge["plan"]
    assert plan["context_window"] == 4096 and plan["calls"] == merge["calls"]
    assert len(plan["levels"]) == merge["depth"]
    assert doc["aggregate_calls"][-1]["final"] and doc["aggregate_calls"][-1]["status"] != "failed"
