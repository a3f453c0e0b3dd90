"""An endpoint that cannot be reached is said at once (exit 2), and `--prompt` sends only itself.

Real sockets only: a refused port is a port bound and closed again; a TLS failure is https
spoken to the plain-HTTP loopback server.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner
from votehelp import TASK, candidates, recipe

from parallelize import run_vote
from parallelize.cli.app import app
from parallelize.engine.client import ChatClient, Endpoint
from parallelize.errors import LLMError, UnreachableError
from parallelize.records import ChatRequest


@pytest.fixture
def refused() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tree(make_tree) -> str:
    return str(make_tree({"a.py": "def a():\n    return 'MARKER-a'\n"}))


@pytest.mark.parametrize(
    "flags",
    [[], ["-m", "some-model", "--context-window", "8000"]],
    ids=["no model: the model-list probe", "model named: the first chat call"],
)
def test_a_refused_endpoint_is_named_and_exits_2_within_seconds(
    tree: str, refused: int, monkeypatch: pytest.MonkeyPatch, flags: list[str]
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://admin:hunter2-pass@127.0.0.1:{refused}/v1")
    started = time.monotonic()
    ran = CliRunner().invoke(app, ["section", tree, "-p", "x", *flags])
    assert time.monotonic() - started < 10
    assert ran.exit_code == 2, ran.stderr
    assert f"error: cannot reach http://127.0.0.1:{refused}/v1: connection refused" in ran.stderr
    assert "hunter2" not in ran.stderr + ran.stdout and "admin" not in ran.stderr


def test_a_tls_failure_at_first_contact_is_exit_2_naming_tls(llm: LLMServer, tree: str) -> None:
    url = llm.base_url.replace("http://", "https://")  # the loopback server speaks plain HTTP
    ran = CliRunner().invoke(app, ["section", tree, "-p", "x", "--base-url", url])
    assert ran.exit_code == 2, ran.stderr
    assert f"error: cannot reach {url}: TLS handshake failed" in ran.stderr
    assert llm.all_requests == []


def test_once_the_endpoint_answered_a_refused_connection_is_an_ordinary_retryable_failure() -> None:
    with LLMServer() as server:
        endpoint = Endpoint(server.base_url)
        with ChatClient(endpoint) as first:
            assert first.list_models() == ["test-model"]
    request = ChatRequest("test-model", ({"role": "user", "content": "hi"},))
    with ChatClient(endpoint) as client, pytest.raises(LLMError) as failed:
        client.complete(request)  # the server is gone now, but it did answer once
    assert not isinstance(failed.value, UnreachableError)
    assert failed.value.retryable and str(failed.value) == "cannot connect: connection refused"


def test_an_unreachable_ensemble_member_fails_only_its_own_candidates(
    llm: LLMServer, refused: int
) -> None:
    llm.models = ["test-model", "gone"]
    candidates(llm, "Blue", "Blue")
    models = ["test-model", {"name": "gone", "base_url": f"http://127.0.0.1:{refused}/v1"}]
    started = time.monotonic()
    result = run_vote(TASK, recipe(n=4, strategy="consensus", quorum=0.5, models=models))
    assert time.monotonic() - started < 10  # not six retries per candidate
    assert result.exit_code == 0 and result.output.strip() == "Blue", result.warnings
    errors = [r.error for r in result.results if r.error]
    assert len(errors) == 2
    assert all(
        f"cannot reach http://127.0.0.1:{refused}/v1: connection refused" in e for e in errors
    )


def test_prompt_without_a_recipe_sends_no_built_in_system_prompt(llm: LLMServer, tree: str) -> None:
    cli = CliRunner()
    ran = cli.invoke(app, ["section", tree, "-p", "List functions", "--format", "json", "-q"])
    assert ran.exit_code == 0, ran.stderr
    assert json.loads(ran.stdout)["recipe"] == "custom"
    assert [m["role"] for m in llm.requests[0].body["messages"]] == ["user"]
    plan = cli.invoke(app, ["section", tree, "-p", "Go", "--system", "Be brief.", "--dry-run"])
    assert "recipe custom" in plan.stderr + plan.stdout
    assert "[system]\nBe brief.\n" in plan.stdout + plan.stderr
    assert "precise technical writer" not in plan.stdout + plan.stderr
