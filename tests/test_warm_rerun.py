"""A re-run whose every call is cached needs no server: no request of any kind (the model list,
the window, the tokenizer probes and counts come from the cache), the same output, and neither
httpcore nor tiktoken loaded. --refresh asks again."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostileserver import Act, HostileServer, completion
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app


def _tree(make_tree) -> Path:
    """12 files, each small enough to be proven whole by its byte length (one chunk per file)."""
    files = {
        f"m{i:02d}.py": f"def f{i}(x):\n    return x + {i}\n" * (1 + 12 * i) for i in range(12)
    }
    return make_tree(files)


def _requests(llm: LLMServer) -> list[tuple[str, str]]:
    """Every request the server saw, chat or not, in order."""
    return [(r.method, r.path) for r in llm.all_requests]


def _twice(args: list[str], llm: LLMServer) -> tuple[list, list, str, str]:
    """Run the CLI twice: the requests of each run and the stdout of each."""
    seen, out = [], []
    for _ in range(2):
        llm.clear()
        run = CliRunner().invoke(app, args)
        assert run.exit_code == 0, run.output
        seen.append(_requests(llm))
        out.append(run.stdout)
    return seen[0], seen[1], out[0], out[1]


CASES = {
    "one chunk per file": ["--by", "file", "-m", "test-model"],
    "chunked": ["-m", "test-model", "--chunk-tokens", "1500"],
    "no model named": ["--by", "file"],
    "local tokenizer": ["-m", "test-model", "--tokenizer", "o200k", "--chunk-tokens", "1500"],
}


@pytest.mark.parametrize("llama", [False, True], ids=["openai-like", "llama.cpp-like"])
@pytest.mark.parametrize("case", CASES)
def test_a_warm_rerun_asks_the_server_nothing(
    llm: LLMServer, make_tree, tmp_path: Path, llama: bool, case: str
) -> None:
    llm.llama = llama  # llama.cpp's /props, /tokenize and /apply-template answer too
    args = ["section", str(_tree(make_tree)), "-p", "Sum up", "-q", *CASES[case]]
    first, second, out_first, out_second = _twice([*args, "--cache-dir", str(tmp_path)], llm)
    assert any("chat" in path for _, path in first)
    assert second == []  # not a chat, not a GET /v1/models, not a /props or /tokenize
    assert out_second == out_first


def test_the_model_list_is_asked_once_when_no_model_is_named(
    llm: LLMServer, make_tree, tmp_path: Path
) -> None:
    args = ["section", str(_tree(make_tree)), "--by", "file", "-p", "Sum up", "-q"]
    first, second, *_ = _twice([*args, "--cache-dir", str(tmp_path)], llm)
    assert first.count(("GET", "/v1/models")) == 1 and second == []


def test_refresh_asks_again(llm: LLMServer, make_tree, tmp_path: Path) -> None:
    llm.llama = True
    args = ["section", str(_tree(make_tree)), "--by", "file", "-p", "Sum up", "-q"]
    args += ["--cache-dir", str(tmp_path)]
    first, *_ = _twice(args, llm)
    llm.clear()
    run = CliRunner().invoke(app, [*args, "--refresh"])
    assert run.exit_code == 0, run.output
    again = _requests(llm)
    assert ("GET", "/v1/models") in again and ("GET", "/props") in again
    assert sum("chat" in path for _, path in again) == sum("chat" in path for _, path in first)


@pytest.fixture
def silent_metadata(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    """A server that answers chats, 404 to /props and /tokenize, and a /models page that is
    not JSON: it says nothing about itself, and says so every time."""
    with HostileServer() as server:
        server.script(Act(200, completion("summary")))
        server.models = b"<html>no models here</html>"
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-loopback-key-0000")
        yield server


def test_an_endpoint_without_metadata_is_not_asked_again(
    silent_metadata: HostileServer, make_tree, tmp_path: Path
) -> None:
    """Its 404s were taken for silence and asked again on every run (3 requests each)."""
    args = ["section", str(_tree(make_tree)), "--by", "file", "-m", "test-model", "-p", "Sum"]
    args += ["-q", "--cache-dir", str(tmp_path)]
    for attempt in range(2):
        silent_metadata.served.clear()
        run = CliRunner().invoke(app, args)
        assert run.exit_code == 0, run.output
        paths = [s.path for s in silent_metadata.served]
        if attempt == 0:
            assert "/props" in paths and len(silent_metadata.chat_requests()) == 12
    assert paths == []


#: Runs the Typer app in a fresh interpreter and reports which heavy modules it loaded.
PROBE = """
import sys
sys.argv = ["parallelize", *sys.argv[1:]]
from parallelize.cli import app
try:
    app()
except SystemExit as exc:
    code = exc.code
print("loaded:" + ",".join(m for m in ("httpcore", "tiktoken", "ssl") if m in sys.modules),
      file=sys.stderr)
"""


def test_a_warm_rerun_loads_no_http_client_and_no_tokenizer(
    llm: LLMServer, make_tree, tmp_path: Path
) -> None:
    """A cold run counts with tiktoken and keeps the counts; the warm one reads them."""
    args = ["section", str(_tree(make_tree)), "--by", "file", "-m", "test-model", "-p", "Sum"]
    args += ["--cache-dir", str(tmp_path / "cache")]
    runs = [
        subprocess.run(
            [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
        )
        for _ in range(2)
    ]
    loaded = [r.stderr.strip().splitlines()[-1] for r in runs]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert "httpcore" in loaded[0] and "tiktoken" in loaded[0]
    assert loaded[1] == "loaded:"
    inputs = [[line for line in r.stderr.splitlines() if line.startswith("inputs:")] for r in runs]
    assert "tokens (cl100k_base)" in inputs[0][0] and inputs[1] == inputs[0]  # the same counts
    assert runs[0].stdout == runs[1].stdout


def test_probes_refused_for_a_wrong_key_are_asked_again(
    llm: LLMServer, make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 says nothing about the server: kept as its answer, it hid the window and the
    tokenizer until --refresh, although the next run had the right key."""
    llm.api_key = "sk-right-key-0000"
    args = ["section", str(_tree(make_tree)), "--by", "file", "-m", "test-model", "-p", "Sum"]
    args += ["-q", "--cache-dir", str(tmp_path)]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-0000")
    assert CliRunner().invoke(app, args).exit_code == 2
    monkeypatch.setenv("OPENAI_API_KEY", "sk-right-key-0000")
    llm.clear()
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    assert ("GET", "/v1/models") in _requests(llm)
