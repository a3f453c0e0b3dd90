"""The real server behaves the way the other integration tests rely on.

Shapes recorded from llama.cpp 0c1e57098 (llama-cpp-python 0.3.36 sdist):
- GET /v1/models -> {"object": "list", "data": [{"id": "tiny-llama", "aliases": [...],
  "meta": {"n_ctx": 512, "n_ctx_train": 4096, "n_vocab": 4096, ...}}], "models": [...]}
- POST /tokenize {"content": "hello world"} -> {"tokens": [int, ...]}
  (ids equal the HF tokenizer saved beside the model as *.tokenizer.json)
- POST /apply-template {"messages": [...]} -> {"prompt": "<|im_start|>system\\n...<|im_end|>\\n
  <|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n"}
- GET /props -> {"default_generation_settings": {"n_ctx": 512 (PER SLOT), "params": {...}},
  "total_slots": 8, "model_alias": "tiny-llama", ...}
- prompt > per-slot context -> HTTP 400 {"error": {"code": 400, "type": "exceed_context_size_error",
  "message": "request (N tokens) exceeds the available context size (512 tokens), ...",
  "n_prompt_tokens": N, "n_ctx": 512}}
"""

import httpx
import pytest

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]


@pytest.fixture(scope="module")
def client(real_server):
    with httpx.Client(base_url=real_server.url, timeout=30) as c:
        yield c


def test_models_lists_alias(client, real_server):
    r = client.get("/v1/models")
    assert r.status_code == 200
    data = r.json()["data"]
    assert [m["id"] for m in data] == [real_server.alias]
    assert data[0]["meta"]["n_ctx"] == 512  # per slot, also visible here


def test_chat_completion_runs_to_max_tokens(client):
    r = client.post(
        "/v1/chat/completions",
        json={"model": "any-name-works", "messages": MESSAGES, "max_tokens": 8},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"  # the model never samples EOS
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] == 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + 8


def test_tokenize_and_apply_template(client):
    tokens = client.post("/tokenize", json={"content": "hello world"}).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)

    prompt = client.post("/apply-template", json={"messages": MESSAGES}).json()["prompt"]
    assert prompt == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
    )
    # the chat prompt_tokens are exactly the tokens of the templated prompt
    n = len(client.post("/tokenize", json={"content": prompt}).json()["tokens"])
    r = client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 1})
    assert r.json()["usage"]["prompt_tokens"] == n


def test_prompt_over_slot_context_is_400(client):
    long = "the quick brown fox jumps over the lazy dog " * 200  # ~1800 tokens > 512
    r = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": long}], "max_tokens": 8},
    )
    assert r.status_code == 400
    assert "exceeds the available context size" in r.json()["error"]["message"]


def test_props_reports_per_slot_context(client):
    props = client.get("/props").json()
    assert props["default_generation_settings"]["n_ctx"] == 512
    assert props["total_slots"] == 8
