"""Hierarchical map-reduce against the loopback server: tree shape, termination, fallbacks."""

from __future__ import annotations

import re

import pytest
from llmserver import LLMServer

from parallelize import RunOptions, run_section
from parallelize.errors import ConfigError
from parallelize.recipe.load import parse_recipe

REDUCE = "REDUCE these notes"
MARKER = re.compile(r"MARKER-\d+")


def recipe(merge: str = "", workers: int = 8):
    text = (
        "model: test-model\n"
        "prompt: 'Find the marker in {{ input }}'\n"
        f"chunking: {{chunks: {workers}}}\n"
        "merge:\n"
        "  strategy: llm\n"
        f"  prompt: '{REDUCE}:\n\n    {{{{ input }}}}'\n"
        "  context_window: 384\n" + merge
    )
    return parse_recipe(text, source="mr.yaml")


@pytest.fixture(autouse=True)
def short_paths(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative input paths keep the source headers short


def tree(make_tree, n: int = 8) -> str:
    make_tree({f"m{i}.txt": f"MARKER-{i}\n" for i in range(n)})
    return "src"


def worker_reply(body: dict) -> str:
    marker = MARKER.search(body["messages"][-1]["content"]).group()
    return f"found {marker} " + "lorem " * 12


def markers_reply(body: dict) -> str:
    return " ".join(MARKER.findall(body["messages"][-1]["content"]))


def reduces(llm: LLMServer) -> list:
    return [r for r in llm.requests if REDUCE in r.prompt]


def test_small_budget_forces_a_tree_and_keeps_every_marker(llm: LLMServer, make_tree) -> None:
    llm.script(REDUCE, markers_reply)
    llm.script(None, worker_reply)
    result = run_section([tree(make_tree)], recipe())
    assert result.exit_code == 0, result.warnings
    assert all(f"MARKER-{i}" in result.output for i in range(8))
    calls = reduces(llm)
    level1 = [r for r in calls if "lorem" in r.last_user]  # reads worker outputs
    final = [r for r in calls if "lorem" not in r.last_user]  # reads reduce outputs only
    assert len(level1) >= 2 and len(final) == 1
    assert len(calls) == len(level1) + 1 == result.details["merge"]["calls"]
    assert result.details["merge"]["depth"] == 2
    # level one covers every chunk exactly once, in contiguous order
    seen = [MARKER.findall(r.last_user) for r in sorted(level1, key=lambda r: r.start)]
    assert sorted(m for ms in seen for m in ms) == sorted(f"MARKER-{i}" for i in range(8))
    spans = re.findall(r"## chunks? (\d+)(?:-(\d+))?", final[0].last_user)
    assert len(spans) == len(level1)
    # the final reduce still sees which files each partial result came from
    assert all(f"m{i}.txt" in final[0].last_user for i in range(8))
    caps = {r.body.get("max_tokens") for r in level1}
    assert len(caps) == 1 and caps.pop() < 256  # every intermediate output is capped
    assert "max_tokens" not in final[0].body
    assert len(result.aggregate_calls) == len(calls)


def test_outputs_that_fit_take_one_reduce(llm: LLMServer, make_tree) -> None:
    llm.script(REDUCE, markers_reply)
    llm.script(None, lambda body: MARKER.search(body["messages"][-1]["content"]).group())
    result = run_section([tree(make_tree, 3)], recipe(workers=3))
    assert result.output == "MARKER-0 MARKER-1 MARKER-2"
    assert len(reduces(llm)) == 1 and result.details["merge"]["depth"] == 1


def test_a_tree_deeper_than_max_depth_is_an_error_before_any_reduce(
    llm: LLMServer, make_tree
) -> None:
    llm.script(REDUCE, markers_reply)
    llm.script(None, worker_reply)
    with pytest.raises(ConfigError, match=r"needs \d levels in a context window of 384") as err:
        run_section([tree(make_tree)], recipe("  max_depth: 1\n"))
    assert reduces(llm) == []  # nothing fits one call and no second level is allowed
    assert err.value.exit_code == 2 and "merge.max_depth" in err.value.hint


def test_a_level_that_does_not_shrink_stops_the_tree(llm: LLMServer, make_tree) -> None:
    # Reducers that pad to their cap produce more than they read: the tree must not loop.
    llm.script(REDUCE, lambda body: "x " * 4000)
    llm.script(None, worker_reply)
    result = run_section([tree(make_tree)], recipe())
    assert any("did not shrink" in w for w in result.warnings)
    assert all(f"found MARKER-{i}" in result.output for i in range(8))  # nothing lost
    assert result.details["merge"]["depth"] <= 3


def test_a_failed_reduce_keeps_the_worker_outputs(llm: LLMServer, make_tree) -> None:
    llm.script(REDUCE, status=500)
    llm.script(None, worker_reply)
    result = run_section([tree(make_tree)], recipe(), options=RunOptions(max_retries=0))
    assert result.exit_code == 1
    assert all(f"found MARKER-{i}" in result.output for i in range(8))
    assert any("a reduce call failed" in w for w in result.warnings)


def test_aspects_reduce_separately_in_the_same_levels(llm: LLMServer, make_tree) -> None:
    def aspect_worker(body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        aspect = re.search(r"\((alpha|beta)\)", prompt).group(1)
        return f"found {MARKER.search(prompt).group()} as {aspect} " + "lorem " * 12

    def aspect_reducer(body: dict) -> str:
        text = body["messages"][-1]["content"]
        return " ".join(dict.fromkeys(MARKER.findall(text) + re.findall(r"as \w+", text)))

    llm.script(REDUCE, aspect_reducer)
    llm.script(None, aspect_worker)
    data = recipe().model_dump(by_alias=True, exclude_unset=True)
    data |= {
        "prompt": "Find the marker ({{ aspect }}) in {{ input }}",
        "aspects": ["alpha", "beta"],
    }
    result = run_section([tree(make_tree)], type(recipe()).model_validate(data))
    assert result.exit_code == 0, result.warnings
    alpha, beta = result.output.removeprefix("# alpha\n\n").split("\n\n# beta\n\n")
    assert "as alpha" in alpha and "as beta" not in alpha
    assert "as beta" in beta and "as alpha" not in beta
    assert all(f"MARKER-{i}" in alpha and f"MARKER-{i}" in beta for i in range(8))
    levels = result.details["merge"]["levels"]
    assert len(levels) == result.details["merge"]["depth"] >= 2
    assert len(levels[-1]) == 2  # both aspects' final reduces ran in the same level


def test_the_summary_shows_depth_and_reduce_calls(llm: LLMServer, make_tree, tmp_path) -> None:
    from typer.testing import CliRunner

    from parallelize.cli.app import app

    llm.script(REDUCE, markers_reply)
    llm.script(None, worker_reply)
    tree(make_tree)
    (tmp_path / "mr.yaml").write_text(
        recipe().model_dump_json(by_alias=True, exclude_unset=True), encoding="utf-8"
    )
    result = CliRunner().invoke(app, ["section", "src", "--recipe", "mr.yaml"])
    assert result.exit_code == 0, result.stderr
    assert all(f"MARKER-{i}" in result.stdout for i in range(8))
    calls = len(reduces(llm))
    assert re.search(
        rf"summary: 8 chunks, {8 + calls} calls, .*reduce depth [23] \({calls} ", result.stderr
    )
