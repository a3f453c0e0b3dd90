"""A merge that cannot work: caught while planning when it can be, else the workers' outputs kept.

Worker calls are paid for; a fatal error in the reduce or JSON-repair calls must not throw them
away (exit 2, the outputs still printed), and the executor must stay usable after it.
"""

from __future__ import annotations

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize import RunOptions, run_section
from parallelize.cli.app import app
from parallelize.engine.session import engine
from parallelize.errors import ConfigError, FatalLLMError
from parallelize.recipe.load import parse_recipe
from parallelize.records import ChatRequest, Task

REDUCE = "REDUCE these notes"


def recipe_text(merge: str = "", *, prompt: str = "{{ input }}") -> str:
    return (
        "model: test-model\n"
        "prompt: 'Summarize {{ input }}'\n"
        "chunking: {chunks: 3}\n"
        "merge:\n"
        "  strategy: llm\n"
        f"  prompt: '{REDUCE}: {prompt}'\n" + merge
    )


@pytest.fixture
def files(make_tree, tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    make_tree({f"f{i}.txt": f"NOTE-{i}\n" for i in range(3)})
    return "src"


def worker(body: dict) -> str:
    text = body["messages"][-1]["content"]
    return "saw " + next(w for w in text.split() if w.startswith("NOTE-"))


def test_an_unknown_merge_model_keeps_the_worker_outputs_and_exits_2(
    llm: LLMServer, files: str, tmp_path
) -> None:
    llm.script(None, worker)
    (tmp_path / "r.yaml").write_text(recipe_text("  model: no-such-model\n"), encoding="utf-8")
    result = CliRunner().invoke(app, ["section", files, "--recipe", "r.yaml", "--no-cache"])
    assert result.exit_code == 2, result.stderr
    assert all(f"saw NOTE-{i}" in result.stdout for i in range(3))
    assert "ordered concatenation" in result.stderr and "HTTP 404" in result.stderr
    assert llm.count(REDUCE) == 1  # one reduce call tried; its 404 stopped the merge
    assert "Traceback" not in result.stderr


def test_a_bad_merge_placeholder_fails_before_any_request(llm: LLMServer, files: str) -> None:
    recipe = parse_recipe(recipe_text(prompt="{{ inptu }}"), source="r.yaml")
    with pytest.raises(ConfigError, match=r"merge\.prompt.*inptu"):
        run_section([files], recipe)
    assert llm.requests == []


def test_dry_run_reports_a_bad_merge_placeholder(files: str, tmp_path) -> None:
    (tmp_path / "r.yaml").write_text(recipe_text(prompt="{{ inptu }}"), encoding="utf-8")
    result = CliRunner().invoke(app, ["section", files, "--recipe", "r.yaml", "--dry-run"])
    assert result.exit_code == 2
    assert "merge.prompt" in result.stderr and "inptu" in result.stderr


def test_a_reduce_window_too_small_fails_before_any_request(llm: LLMServer, files: str) -> None:
    long_prompt = "{{ input }} " + "Keep every note. " * 60  # the prompt alone fills the window
    text = recipe_text("  context_window: 256\n", prompt=long_prompt)
    recipe = parse_recipe(text, source="r.yaml")
    with pytest.raises(ConfigError, match="no room to reduce"):
        run_section([files], recipe)
    assert llm.requests == []


def test_a_fatal_json_repair_keeps_the_valid_answers_and_exits_2(
    llm: LLMServer, files: str
) -> None:
    llm.script("could not be used", status=404)
    llm.script("NOTE-1", "not json at all")
    llm.script(None, lambda body: '{"notes": ["' + worker(body) + '"]}')
    text = "model: test-model\nprompt: 'Summarize {{ input }}'\nchunking: {chunks: 3}\n"
    recipe = parse_recipe(text + "merge: {strategy: json}\n", source="r.yaml")
    result = run_section([files], recipe, options=RunOptions(cache=False))
    assert result.exit_code == 2
    assert "saw NOTE-0" in result.output and "saw NOTE-2" in result.output
    assert any("repair calls cannot work" in w for w in result.warnings)


def test_the_executor_runs_again_after_a_fatal_error(llm: LLMServer) -> None:
    def task(model: str) -> Task:
        return Task(0, "t", ChatRequest(model, ({"role": "user", "content": "hi"},), {}))

    with engine(RunOptions(cache=False), concurrency=2) as executor:
        with pytest.raises(FatalLLMError):
            executor.run([task("no-such-model")])
        (result,) = executor.run([task("test-model")])
    assert result.succeeded, result.error
