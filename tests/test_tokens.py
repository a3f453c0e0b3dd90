"""Token counters: exact pieces at safe cuts, the calibrated estimate, offline fallback, servers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llmserver import LLMServer, estimate_tokens

from parallelize.engine.client import ChatClient, Endpoint
from parallelize.inputs import tokens
from parallelize.inputs.tokens import (
    ESTIMATE,
    get_counter,
    is_safe_cut,
    segment_offsets,
    server_counter,
)
from parallelize.plan.window import context_window, probe_context_window

COUNTERS = [get_counter(tokenizer="o200k"), get_counter(tokenizer="cl100k"), ESTIMATE]
TRICKY = "ab Zé日9_/\\\t\n\r.:;(){}\"'#-"


@pytest.mark.parametrize("counter", COUNTERS, ids=lambda c: c.name)
@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=TRICKY, max_size=120))
def test_counts_add_up_at_safe_cuts(counter, text: str) -> None:
    whole = counter.count(text)
    for cut in (i for i in range(1, len(text)) if is_safe_cut(text, i)):
        parts = counter.count(text[:cut]) + counter.count(text[cut:])
        if counter.exact:  # tiktoken: exactly, which is why long files count in parallel pieces
            assert parts == whole, (text[:cut], text[cut:])
        else:  # the estimate rounds each piece up
            assert whole <= parts <= whole + 1


def test_segments_end_at_safe_cuts_and_prefer_top_level_blocks() -> None:
    block = "def f{i}(x):\n    if x:\n        return {i}\n\n    return -x\n\n\n"
    text = "".join(block.format(i=i) for i in range(2000))
    ends = segment_offsets(text)
    assert ends[-1] == len(text) and ends == sorted(set(ends)) and len(ends) > 3
    assert all(is_safe_cut(text, end) and text.startswith("def ", end) for end in ends[:-1])
    assert segment_offsets("short\n") == [6]


def test_estimate_is_calibrated_by_kind_of_text() -> None:
    prose = "the quick brown fox jumps over the lazy dog " * 50
    digits = "3141592653 5897932384 6264338327 9502884197 " * 50
    assert ESTIMATE.count(digits) > 2 * ESTIMATE.count(prose)  # numbers cost far more per byte
    for counter in COUNTERS[:2]:
        if counter.exact:  # close on prose and code, and on the safe side where it is off
            for text in (prose, Path(__file__).read_text()):
                assert 0.9 <= ESTIMATE.count(text) / counter.count(text) <= 1.4
            assert ESTIMATE.count(digits) >= counter.count(digits)


@pytest.fixture
def silent_proxy() -> Iterator[int]:
    """A proxy port that accepts connections and never answers (a firewall that drops)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    server.close()
    for conn in held:
        conn.close()


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


@pytest.mark.parametrize("proxy", ["refused", "silent"])
def test_no_network_and_no_cache_falls_back_to_the_estimate(
    proxy: str, silent_proxy: int, tmp_path: Path, monkeypatch
) -> None:
    port = silent_proxy if proxy == "silent" else closed_port()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    counter = get_counter("gpt-4o", download_timeout=0.5)
    assert counter.name == "estimate" and not counter.exact
    assert "o200k_base" in (counter.note or "") and "TIKTOKEN_CACHE_DIR" in (counter.note or "")
    if proxy == "silent":
        assert "timed out after 0.5s" in (counter.note or "")
    assert get_counter("gpt-4o") is counter  # announced once: the failure is remembered


def test_server_tokenizer_and_context_window(llm: LLMServer) -> None:
    client = ChatClient(Endpoint(llm.base_url, "sk-test-loopback-key-0000"))
    fallback = get_counter("test-model")
    plain = server_counter(client.post_json, fallback=fallback)
    assert plain.name == fallback.name and "no tokenize endpoint" in (plain.note or "")
    assert probe_context_window(client.get_json, "test-model") is None
    llm.llama = True
    llm.context_window = 2048
    counter = server_counter(client.post_json, fallback=fallback)
    text = "def f(x):\n    return x * 2\n"
    assert counter.name == "server" and counter.count(text) == estimate_tokens(text)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
    template = "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n"
    assert counter.request_tokens(messages) == estimate_tokens(
        f"{template}{text}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert probe_context_window(client.get_json, "test-model") == (
        2048,
        "the server's /props (llama.cpp n_ctx per slot)",
    )
    client.close()


def test_vllm_model_list_and_the_built_in_table() -> None:
    listed = {"data": [{"id": "other", "max_model_len": 1}, {"id": "qwen", "max_model_len": 32768}]}
    answers = {"props": None, "v1/models": listed}
    assert probe_context_window(answers.get, "qwen") == (
        32768,
        "the server's model list (max_model_len)",
    )
    assert context_window("gpt-4o-mini") == 128_000
    assert context_window("openai/gpt-4.1-nano") == 1_047_576
    assert context_window("some-local-model") == 8_192


def test_encoding_copy_speeds_later_loads_and_counts_the_same(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not tokens._is_cached("cl100k_base"):
        pytest.skip("needs the cl100k_base encoding in TIKTOKEN_CACHE_DIR")  # run by `make test`
    monkeypatch.setenv("PARALLELIZE_CACHE_DIR", str(tmp_path))
    first = tokens._encoding_params("cl100k_base")
    [copy] = tmp_path.glob("tiktoken-cl100k_base-*.marshal")
    again = tokens._encoding_params("cl100k_base")
    assert again == first and copy.stat().st_size > 1_000_000
    copy.write_bytes(b"not marshal data")  # a damaged copy is ignored and rewritten
    assert tokens._encoding_params("cl100k_base") == first
