"""`--merge json` end to end: JSON mode requested, answers validated, one repair, merged doc."""

from __future__ import annotations

import json

import pytest
from llmserver import LLMServer, error_body, prompt_tokens

from parallelize import RunOptions, run_section
from parallelize.errors import RecipeError
from parallelize.recipe.load import parse_recipe

SCHEMA = """
  schema:
    type: object
    required: [findings, effort]
    properties:
      findings: {type: array, items: {type: object, required: [id]}}
      effort: {type: number}
"""

BAD = '{"findings": "oops", "effort": 1}'


def recipe(extra: str = "", *, schema: bool = True):
    text = (
        "model: test-model\n"
        "prompt: 'List findings in {{ input }}'\n"
        "chunking: {by: file}\n"
        "merge:\n"
        "  strategy: json\n"
        "  dedupe_by: id\n"
        "  rules: {effort: sum}\n" + (SCHEMA if schema else "") + extra
    )
    return parse_recipe(text, source="test.yaml")


def tree(make_tree, n: int = 3):
    return str(make_tree({f"m{i}.txt": f"MARKER-{i}\n" for i in range(n)}))


def doc(*ids: int, effort: float = 1) -> str:
    return json.dumps({"findings": [{"id": i, "chunk": ids[0]} for i in ids], "effort": effort})


def test_lists_and_objects_merge_with_dedupe(llm: LLMServer, make_tree) -> None:
    llm.script("MARKER-0", doc(1, 2, effort=1.5))
    llm.script("MARKER-1", "Sure, here it is:\n```json\n" + doc(2, 3, effort=2) + "\n```")
    llm.script("MARKER-2", doc(4))
    result = run_section([tree(make_tree)], recipe())
    assert result.exit_code == 0, result.warnings
    merged = json.loads(result.output)
    assert [f["id"] for f in merged["findings"]] == [1, 2, 3, 4]  # chunk order, id 2 once
    assert merged["findings"][1]["chunk"] == 1  # the first occurrence wins
    assert merged["effort"] == 4.5
    assert len(llm.requests) == 3
    for request in llm.requests:
        assert request.body["response_format"]["type"] == "json_schema"
        assert request.body["response_format"]["json_schema"]["schema"]["required"] == [
            "findings",
            "effort",
        ]
        assert "It must match this JSON Schema" in request.last_user


def test_without_a_schema_json_mode_is_requested(llm: LLMServer, make_tree) -> None:
    llm.script(None, '{"tags": ["x"]}')
    result = run_section([tree(make_tree, 2)], recipe(schema=False))
    assert json.loads(result.output) == {"tags": ["x", "x"]}
    assert {r.body["response_format"]["type"] for r in llm.requests} == {"json_object"}
    assert all("one JSON document only" in r.last_user for r in llm.requests)


def test_invalid_json_is_repaired_once_then_counts_as_failed(llm: LLMServer, make_tree) -> None:
    llm.script("MARKER-0", doc(1))
    llm.script("MARKER-1", "I found nothing worth reporting.")  # prose, again on repair
    llm.script("MARKER-2", BAD, times=1)  # schema violation, then fixed
    llm.script("MARKER-2", doc(7))
    result = run_section([tree(make_tree)], recipe())
    assert llm.count("MARKER-0") == 1
    assert llm.count("MARKER-1") == 2  # the answer and exactly one repair
    assert llm.count("MARKER-2") == 2
    assert [r.status for r in result.results] == ["ok", "failed", "ok"]
    assert "invalid JSON after one repair: not valid JSON" in (result.results[1].error or "")
    assert result.exit_code == 1
    assert [f["id"] for f in json.loads(result.output)["findings"]] == [1, 7]
    repair = next(
        r
        for r in llm.requests
        if "MARKER-2" in r.prompt
        and r.body["messages"][-1]["content"].startswith("Your previous reply could not be used")
    )
    assert repair.body["messages"][-2] == {"role": "assistant", "content": BAD}
    assert "$.findings does not match the schema" in repair.last_user
    assert result.details["json"] == {"checked": 3, "repaired": 1, "invalid": 1}
    spent = sum(prompt_tokens(r.body) for r in llm.requests if "MARKER-1" in r.prompt)
    assert result.results[1].usage.prompt_tokens == spent  # both calls are accounted for


def test_endpoint_without_json_mode_falls_back_to_instructions(llm: LLMServer, make_tree) -> None:
    message = "Unsupported parameter: 'response_format' is not supported with this model."
    llm.script(
        lambda body: "response_format" in body,
        status=400,
        error=error_body(message, "invalid_request_error", param="response_format"),
    )
    llm.script(None, doc(1))
    result = run_section([tree(make_tree, 2)], recipe(), options=RunOptions(max_retries=0))
    assert result.exit_code == 0
    assert json.loads(result.output)["effort"] == 2
    accepted = [r for r in llm.requests if r.status == 200]
    assert len(accepted) == 2
    assert all("response_format" not in r.body for r in accepted)
    assert all("It must match this JSON Schema" in r.last_user for r in accepted)


def test_an_invalid_schema_fails_before_any_request(llm: LLMServer, make_tree) -> None:
    bad = recipe(schema=False).model_copy(
        update={"merge": recipe().merge.model_copy(update={"json_schema": {"type": "thing"}})}
    )
    with pytest.raises(RecipeError, match=r"merge\.schema: not a valid JSON Schema"):
        run_section([tree(make_tree, 1)], bad)
    assert llm.all_requests == []


def test_cli_merge_json_prints_one_valid_document(llm: LLMServer, make_tree) -> None:
    from typer.testing import CliRunner

    from parallelize.cli.app import app

    llm.script("MARKER-0", '{"files": ["a"], "ok": true}')
    llm.script("MARKER-1", 'Result:\n```json\n{"files": ["b"], "ok": true}\n```')
    args = ["section", tree(make_tree, 2), "--by", "file", "-p", "Describe", "--merge", "json"]
    result = CliRunner().invoke(app, [*args, "-m", "test-model", "-q"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"files": ["a", "b"], "ok": True}
