"""Aspects (every chunk once per aspect) and the guardrail gate, through the library and the CLI."""

from __future__ import annotations

import json

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize import run_section
from parallelize.cli.app import app
from parallelize.errors import RecipeError
from parallelize.recipe.load import find_recipe, override, parse_recipe

SCREEN = "You are a safety screen"
ANSWER = "Answer the request below"


def review(verdict: str, effort: float, *findings: tuple[str, int, str]) -> str:
    items = [
        {"path": p, "line": n, "severity": s, "problem": "p", "fix": "f"} for p, n, s in findings
    ]
    return json.dumps({"verdict": verdict, "effort_hours": effort, "findings": items})


def test_aspects_times_chunks_and_json_per_aspect(llm: LLMServer, make_tree) -> None:
    root = make_tree({"a.py": "A = 1\n", "b.py": "B = 2\n", "c.py": "C = 3\n"})
    llm.script(
        lambda b: "Aspect: security" in str(b) and "a.py" in str(b),
        review("request_changes", 2, ("a.py", 1, "high")),
    )
    llm.script("Aspect: security", review("approve", 0.5))
    llm.script("Aspect: performance", review("comment", 1, ("b.py", 1, "low")))
    llm.script("Aspect: readability", review("approve", 0))
    recipe = override(
        find_recipe("review-aspects"),
        {"model": "test-model", "chunking": {"by": "file"}},
        replace=("chunking",),
    )
    result = run_section([str(root)], recipe)
    assert result.exit_code == 0, result.warnings
    assert len(llm.requests) == 3 * 3  # chunks × aspects, one call each
    assert {r.body["response_format"]["type"] for r in llm.requests} == {"json_schema"}
    labels = [t.label for t in result.tasks]
    assert labels[:4] == [
        "chunk 1/3 [security]",
        "chunk 2/3 [security]",
        "chunk 3/3 [security]",
        "chunk 1/3 [performance]",
    ]
    merged = json.loads(result.output)
    assert list(merged) == ["security", "performance", "readability"]
    assert merged["security"]["verdict"] == "request_changes"  # the most conservative
    assert merged["security"]["effort_hours"] == 3  # 2 + 0.5 + 0.5
    assert merged["performance"]["findings"] == [
        {"path": "b.py", "line": 1, "severity": "low", "problem": "p", "fix": "f"}
    ]  # identical findings from three chunks, kept once (rule union)
    assert merged["readability"] == {"verdict": "approve", "effort_hours": 0, "findings": []}


def test_concat_groups_outputs_per_aspect(llm: LLMServer, make_tree) -> None:
    recipe = parse_recipe(
        "model: test-model\nprompt: '{{ aspect }}: {{ instructions }} {{ input }}'\n"
        "chunking: {chunks: 2}\naspects: [{name: tone, instructions: TONE}, {name: facts}]\n",
        source="a.yaml",
    )
    root = make_tree({"a.txt": "one\n" * 5, "b.txt": "two\n" * 5})
    result = run_section([str(root)], recipe)
    assert len(llm.requests) == 4
    assert result.output.startswith("# tone\n\n## chunk 1/2: ")
    tone, facts = result.output.split("\n# facts\n")
    assert "ECHO tone: TONE" in tone and "ECHO facts: " in facts and "TONE" not in facts


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("aspects: [a, b]\nprompt: '{{ input }}'", "uses neither {{ aspect }} nor"),
        ("prompt: '{{ aspect }} {{ input }}'", "unknown placeholder '{{ aspect }}'"),
        ("aspects: [a]\nguard: {aspect: a}\nprompt: '{{ aspect }}'", "needs an answering aspect"),
    ],
)
def test_aspect_mistakes_fail_before_any_request(llm, make_tree, yaml_text, message) -> None:
    root = make_tree({"a.txt": "x\n"})
    with pytest.raises(RecipeError, match=message.replace("{", r"\{").replace("}", r"\}")):
        run_section([str(root)], parse_recipe("model: test-model\n" + yaml_text, source="r.yaml"))
    assert llm.all_requests == []


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def guard(cli: CliRunner, query: str = "How do I bake bread?", *extra: str):
    args = ["section", "-", "--recipe", "guardrails", "-m", "test-model", *extra]
    return cli.invoke(app, args, input=query)


def test_guardrail_passes_the_answer_when_the_screen_clears(llm: LLMServer, cli) -> None:
    llm.latency = 0.2
    llm.script(SCREEN, '{"flagged": false, "reason": "a baking question"}')
    llm.script(ANSWER, "Mix flour, water, salt and yeast.")
    result = guard(cli)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Mix flour, water, salt and yeast.\n"
    assert len(llm.requests) == 2 and llm.peak_concurrency == 2  # answer and screen in parallel
    screen = next(r for r in llm.requests if SCREEN in r.prompt)
    assert screen.body["response_format"]["json_schema"]["schema"]["required"] == [
        "flagged",
        "reason",
    ]
    answer = next(r for r in llm.requests if ANSWER in r.prompt)
    assert "response_format" not in answer.body and "How do I bake bread?" in answer.last_user


def test_flagged_request_withholds_the_answer_and_exits_4(llm: LLMServer, cli) -> None:
    llm.script(SCREEN, '```json\n{"flagged": true, "reason": "asks for malware"}\n```')
    llm.script(ANSWER, "SECRET ANSWER")
    result = guard(cli, "write ransomware", "--format", "json")
    assert result.exit_code == 4
    assert "SECRET ANSWER" not in result.stdout
    doc = json.loads(result.stdout)
    assert doc["result"] == "" and doc["exit_code"] == 4
    assert doc["guard"] == {"flagged": True, "reason": "asks for malware", "screen_failed": False}
    assert "flagged: asks for malware (the answer was withheld)" in result.stderr


@pytest.mark.parametrize(
    ("screen", "why"),
    [
        ({"reply": "Looks harmless to me."}, "invalid JSON after one repair"),
        ({"reply": '{"flagged": "no", "reason": "ok"}'}, "is not of type 'boolean'"),
        ({"status": 500}, "HTTP 500"),
    ],
)
def test_a_failed_screen_fails_closed(llm: LLMServer, cli, screen, why) -> None:
    llm.script(SCREEN, **screen)
    llm.script(ANSWER, "SECRET ANSWER")
    result = guard(cli, "anything", "--max-retries", "0", "-q")
    assert result.exit_code == 4
    assert result.stdout == ""
    assert "flagged: the screen failed" in result.stderr and why in result.stderr
    if "reply" in screen:
        assert llm.count(SCREEN) == 2  # the screen got its one repair, then the gate closed


def test_a_flagged_answer_is_never_written_to_files(llm: LLMServer, cli, tmp_path) -> None:
    llm.script(SCREEN, '{"flagged": true, "reason": "no"}')
    llm.script(ANSWER, "SECRET ANSWER")
    result = guard(cli, "anything", "--out-dir", str(tmp_path / "out"))
    assert result.exit_code == 4
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert all("SECRET ANSWER" not in p.read_text() for p in written)
    assert result.stdout == ""


def test_the_gate_withholds_only_the_flagged_clone(llm: LLMServer, cli, tmp_path) -> None:
    def asks(aspect: str, lang: str):
        return lambda body: aspect in str(body) and f"Language: {lang}" in str(body)

    llm.script(asks(SCREEN, "fr"), '{"flagged": true, "reason": "french trouble"}')
    llm.script(SCREEN, '{"flagged": false, "reason": "fine"}')
    llm.script(asks(ANSWER, "fr"), "FR ANSWER")
    llm.script(ANSWER, "EN ANSWER")
    recipe = find_recipe("guardrails").model_dump(by_alias=True, exclude_unset=True)
    recipe |= {
        "prompt": "Language: {{ lang }}\n" + recipe["prompt"],
        "matrix": {"lang": ["en", "fr"]},
        "model": "test-model",
    }
    recipe.pop("source", None)
    (tmp_path / "g.yaml").write_text(json.dumps(recipe), encoding="utf-8")
    args = ["section", "-", "--recipe", str(tmp_path / "g.yaml"), "--format", "json"]
    result = cli.invoke(app, args, input="a question")
    assert result.exit_code == 4, result.stderr
    doc = json.loads(result.stdout)
    assert "EN ANSWER" in doc["result"]
    assert "FR ANSWER" not in result.stdout  # neither merged nor in the per-section results
    assert doc["guard"]["withheld"] == ["fr"]
    assert "flagged: fr: french trouble (the answers of fr were withheld)" in result.stderr
