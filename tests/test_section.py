"""`run_section` end to end against the loopback server: overlap, order, merges, failures."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from llmserver import LLMServer

from parallelize import RunOptions, find_recipe, run_section
from parallelize.errors import FatalLLMError
from parallelize.recipe.load import override


def recipe(**values: object):
    return override(find_recipe("summarize"), {"model": "test-model", **values})


def tree(make_tree, n: int = 4) -> Path:
    return make_tree({f"m{i}.txt": f"MARKER-{i}\n" + "text line\n" * 20 for i in range(n)})


def test_chunks_run_concurrently_and_merge_in_order(llm: LLMServer, make_tree) -> None:
    llm.latency = 1.0  # long enough that 4 starts overlap even on a loaded machine
    root = tree(make_tree, 4)
    result = run_section([str(root)], recipe(chunking={"chunks": 4}))
    assert llm.peak_concurrency == 4  # overlapped: seen by the server, not by a wall clock
    assert len(llm.requests) == 4 and result.exit_code == 0
    positions = [result.output.index(f"MARKER-{i}") for i in range(4)]
    assert positions == sorted(positions)
    assert result.output.startswith("## chunk 1/4: ")
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0


def test_workers_are_identical_but_for_the_chunk(llm: LLMServer, make_tree) -> None:
    run_section([str(tree(make_tree, 3))], recipe(chunking={"chunks": 3}, temperature=0.3))
    bodies = [r.body for r in llm.requests]
    assert {b["model"] for b in bodies} == {"test-model"}
    assert {b["temperature"] for b in bodies} == {0.3}
    assert len({b["messages"][0]["content"] for b in bodies}) == 1  # same system prompt
    assert len({b["messages"][1]["content"] for b in bodies}) == 3  # different chunks


def test_llm_merge_reduces_every_output(llm: LLMServer, make_tree) -> None:
    llm.script("consecutive sections", "MERGED ANSWER")
    result = run_section(
        [str(tree(make_tree, 3))], recipe(chunking={"chunks": 3}, merge={"strategy": "llm"})
    )
    assert result.output == "MERGED ANSWER"
    merge_prompt = llm.requests[-1].last_user
    assert all(f"MARKER-{i}" in merge_prompt for i in range(3))
    assert len(result.aggregate_calls) == 1 and len(llm.requests) == 4


def test_failed_chunks_keep_the_others_and_exit_1(llm: LLMServer, make_tree) -> None:
    llm.script("MARKER-1", status=500)
    options = RunOptions(max_retries=1)
    result = run_section([str(tree(make_tree, 3))], recipe(chunking={"chunks": 3}), options=options)
    assert result.exit_code == 1
    assert [r.status for r in result.results] == ["ok", "failed", "ok"]
    assert "MARKER-0" in result.output and "MARKER-2" in result.output
    assert llm.count("MARKER-1") == 2  # one retry, then given up


def test_auth_failure_stops_early_with_one_error(llm: LLMServer, make_tree) -> None:
    llm.api_key = "sk-the-right-one"
    llm.latency = 0.05
    root = make_tree({f"f{i}.txt": f"file {i}\n" for i in range(20)})
    with pytest.raises(FatalLLMError, match="HTTP 401") as err:
        run_section([str(root)], recipe(chunking={"by": "file"}, concurrency=2))
    assert err.value.exit_code == 2
    assert len(llm.requests) <= 2  # the in-flight ones at most, not all 20


def test_truncated_replies_are_marked(llm: LLMServer, make_tree) -> None:
    llm.script("MARKER-0", "cut sho", finish_reason="length")
    result = run_section([str(tree(make_tree, 2))], recipe(chunking={"chunks": 2}))
    assert [r.status for r in result.results] == ["truncated", "ok"]
    assert len(result.truncated) == 1 and result.exit_code == 0


def test_dry_run_makes_no_model_call(llm: LLMServer, make_tree) -> None:
    result = run_section(
        [str(tree(make_tree, 4))], recipe(chunking={"chunks": 2}), options=RunOptions(dry_run=True)
    )
    assert result.dry_run and len(result.tasks) == 2
    assert llm.requests == []  # only the endpoint's metadata was asked (its window, tokenizer)


def test_stdin_input(llm: LLMServer) -> None:
    result = run_section(["-"], recipe(), stdin=io.StringIO("piped MARKER-X\n"))
    assert "MARKER-X" in result.output
    assert '<file path="&lt;stdin&gt;">' in llm.requests[0].last_user  # attributes XML-escaped


def test_model_is_discovered_from_a_local_server(llm: LLMServer, make_tree) -> None:
    llm.models = ["only-model"]
    root = tree(make_tree, 1)
    result = run_section([str(root)], override(find_recipe("summarize"), {}))
    assert result.model == "only-model"
    assert llm.requests[0].body["model"] == "only-model"


def test_a_rejected_parameter_stops_the_run(llm: LLMServer, make_tree) -> None:
    llm.script(
        lambda body: "response_format" in body,
        status=400,
        error={"message": "response_format type must be one of text or json_object"},
    )
    root = make_tree({f"f{i}.txt": f"file {i}\n" for i in range(10)})
    bad = recipe(chunking={"by": "file"}, concurrency=1, params={"response_format": {"type": "x"}})
    with pytest.raises(FatalLLMError, match="response_format") as err:
        run_section([str(root)], bad)
    assert err.value.exit_code == 2 and len(llm.requests) == 1
