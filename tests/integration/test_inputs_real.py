"""Token counts and context windows from a real llama.cpp server (its /props, /tokenize and
/apply-template), and what happens when the client counts differently from the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from parallelize import run_section
from parallelize.engine.client import ChatClient, Endpoint
from parallelize.inputs.tokens import get_counter, server_counter
from parallelize.recipe.model import Recipe

MODEL = "tiny-llama"
N_CTX = 512  # per slot, as the real_server fixture starts it


@pytest.fixture
def endpoint(real_server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_BASE_URL", real_server.base_url)
    return real_server


def source_tree(root: Path, files: int, functions: int = 25) -> Path:
    root.mkdir()
    for i in range(files):
        body = "".join(
            f"def f{i}_{j}(value):\n    return value * {j}\n\n" for j in range(functions)
        )
        (root / f"mod_{i:02d}.py").write_text(body, encoding="utf-8")
    return root


def recipe(**values) -> Recipe:
    base = {"model": MODEL, "prompt": "Summarize:\n{{ input }}", "max_tokens": 8}
    return Recipe.model_validate({**base, **values})


def test_window_and_counts_from_the_server_match_its_usage(endpoint, tmp_path) -> None:
    root = source_tree(tmp_path / "src", 6)
    result = run_section([str(root)], recipe(tokenizer="server"))
    assert result.details["counter"] == "server"
    assert result.details["context_window"] == N_CTX
    assert "/props" in result.details["context_window_source"]
    assert len(result.results) > 3 and not result.failed  # no request overflowed the slot
    client = ChatClient(Endpoint(endpoint.base_url))
    counter = server_counter(client.post_json, fallback=get_counter(MODEL))
    for done in result.results:
        planned = counter.request_tokens(done.task.request.messages)
        assert planned == done.completion.usage.prompt_tokens <= N_CTX - 8
    client.close()


def test_chunks_the_server_refuses_heal_with_the_chunk_named(endpoint, tmp_path) -> None:
    # Pieces filled to a window twice the slot's are refused: each is sent in parts instead.
    root = source_tree(tmp_path / "src", 2, functions=80)
    counted = recipe(chunking={"by": "file"}, concurrency=1, context_window=2 * N_CTX)
    result = run_section([str(root)], counted)
    assert result.exit_code == 0 and not result.failed
    healed = [w for w in result.warnings if "was longer than the server's context window" in w]
    assert healed and all(f"{root}/mod_" in w for w in healed)
