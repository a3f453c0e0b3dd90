"""`parallelize section` against a real llama.cpp server (random weights: assert mechanics only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from parallelize import RunOptions, run_section
from parallelize.errors import FatalLLMError
from parallelize.recipe.model import Recipe

MODEL = "tiny-llama"


@pytest.fixture
def endpoint(real_server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_BASE_URL", real_server.base_url)
    return real_server


def recipe(**values) -> Recipe:
    base = {"model": MODEL, "prompt": "List the functions:\n{{ input }}", "max_tokens": 8}
    return Recipe.model_validate({**base, **values})


def source_tree(root: Path, files: int, lines: int = 6) -> Path:
    root.mkdir()
    for i in range(files):
        body = "".join(f"def f{i}_{j}(x):\n    return x + {j}\n" for j in range(lines))
        (root / f"mod_{i:03d}.py").write_text(body, encoding="utf-8")
    return root


def test_chunks_of_a_real_directory(endpoint, tmp_path: Path) -> None:
    root = source_tree(tmp_path / "src", 10)
    result = run_section([str(root)], recipe(chunking={"chunks": 4}))
    assert len(result.results) == 4 and not result.failed
    # the tiny model never stops: every reply is cut at max_tokens, and the run says so
    assert {r.status for r in result.results} == {"truncated"}
    assert all(r.completion.usage.completion_tokens == 8 for r in result.results)
    assert all(r.completion.usage.prompt_tokens > 50 for r in result.results)
    assert [result.output.index(f"## chunk {i}/4") for i in range(1, 5)] == sorted(
        result.output.index(f"## chunk {i}/4") for i in range(1, 5)
    )


def test_more_workers_than_server_slots_loses_nothing(endpoint, tmp_path: Path) -> None:
    root = source_tree(tmp_path / "src", 48, lines=2)
    result = run_section([str(root)], recipe(chunking={"by": "file"}, concurrency=32))
    assert len(result.results) == 48 and not result.failed
    assert all(r.text for r in result.results)
    assert result.output.count("## chunk ") == 48


def test_a_parameter_the_server_rejects_fails_fast(endpoint, tmp_path: Path) -> None:
    root = source_tree(tmp_path / "src", 12, lines=1)
    bad = recipe(chunking={"by": "file"}, concurrency=2, params={"response_format": {"type": "x"}})
    with pytest.raises(FatalLLMError, match="response_format") as err:
        run_section([str(root)], bad, options=RunOptions(max_retries=3))
    assert err.value.exit_code == 2


def test_a_chunk_far_larger_than_the_context_fails_clearly(endpoint, tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / "huge.py").write_text("x = 1\n" * 1500, encoding="utf-8")
    big = recipe(chunking={"chunks": 1}, context_window=100_000)
    result = run_section([str(root)], big)  # 8 parts, the most a chunk is split into
    assert result.exit_code == 1 and [r.task.paths for r in result.failed] == [(f"{root}/huge.py",)]
    error = result.failed[0].error or ""
    assert "still too long for the server in 8 parts" in error
    assert "exceeds the available context size" in error


def test_the_cli_against_the_real_server(endpoint, tmp_path: Path) -> None:
    root = source_tree(tmp_path / "src", 6)
    parallelize = Path(sys.executable).with_name("parallelize")
    run = subprocess.run(
        [str(parallelize), "section", str(root), "--chunks", "3", "-m", MODEL, "--max-tokens", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "OPENAI_BASE_URL": endpoint.base_url,
            "NO_PROXY": "127.0.0.1",
            "PATH": "/usr/bin",
            "HOME": str(tmp_path / "home"),  # without HOME the cache went to the user's own
        },
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("## chunk ") == 3
    assert "summary: 3 chunks, 3 calls" in run.stderr and "3 truncated" in run.stderr
