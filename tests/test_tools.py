"""Tools (issue 15): the loop in each worker, the fs tools, declared commands, the cache.

Everything runs against the loopback server over HTTP; tools run for real in tmp_path.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli import app
from parallelize.engine.session import RunOptions
from parallelize.errors import FatalLLMError, RecipeError
from parallelize.recipe.load import parse_recipe
from parallelize.recipe.model import Recipe
from parallelize.run import run_section

PY = sys.executable
#: A command that records when it started and ended (system-wide monotonic clock) and sleeps.
SLEEPER = (
    "import pathlib, sys, time; d = pathlib.Path('log'); d.mkdir(exist_ok=True); "
    "(d / (sys.argv[1] + '.start')).write_text(repr(time.monotonic())); time.sleep(0.2); "
    "(d / (sys.argv[1] + '.end')).write_text(repr(time.monotonic())); print('slept', sys.argv[1])"
)


def recipe(**extra: Any) -> Recipe:
    return Recipe.model_validate({"model": "test-model", "prompt": "{{ input }}", **extra})


def first_round(body: dict[str, Any]) -> bool:
    return body["messages"][-1]["role"] == "user"


def tool_messages(body: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [m for m in (body or {}).get("messages", []) if m.get("role") == "tool"]


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": arguments}}


def run(root: Path, rec: Recipe, **options: Any) -> Any:
    settings = RunOptions(tool_root=str(root), **options)
    return run_section([str(root / "main.py")], rec, options=settings)


@pytest.fixture
def project(make_tree: Any) -> Path:
    return make_tree(
        {
            "main.py": "from helper import answer\nprint(answer())\n",
            "helper.py": "def answer():\n    return 42\n",
            "notes/todo.md": "- ship it\n",
            ".gitignore": "build/\n",
            "build/out.txt": "generated\n",
            "config.py": 'API_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD"\n',
            ".env": "TOKEN=abc\n",
        }
    )


def test_three_calls_of_one_reply_run_at_once_and_answer_in_order(
    llm: LLMServer, project: Path
) -> None:
    sleepy = {
        "name": "sleepy",
        "description": "sleep a little",
        "parameters": {"type": "object", "properties": {"tag": {"type": "string"}}},
        "command": [PY, "-c", SLEEPER, "{{ tag }}"],
        "timeout": 10,
    }
    ids = ["id-z", "id-x", "id-y"]  # not sorted: the model's order is kept
    calls = [call("sleepy", tag=t) | {"id": i} for t, i in zip("abc", ids, strict=True)]
    llm.script(first_round, tool_calls=calls)
    llm.script(None, "done")
    result = run(project, recipe(tools=[sleepy]), cache=False)
    assert result.results[0].text == "done" and result.exit_code == 0
    starts = [float((project / "log" / f"{t}.start").read_text()) for t in "abc"]
    ends = [float((project / "log" / f"{t}.end").read_text()) for t in "abc"]
    assert max(starts) < min(ends)  # every call started before the first one ended
    answered = tool_messages(llm.requests[-1].body)
    assert [m["tool_call_id"] for m in answered] == ids
    assert ["slept a" in answered[0]["content"], "slept c" in answered[2]["content"]] == [1, 1]
    calls = result.results[0].tool_calls
    assert [(c.name, c.arguments, c.ok) for c in calls] == [
        ("sleepy", {"tag": t}, True) for t in "abc"
    ]
    first = llm.requests[0].body or {}
    assert first["parallel_tool_calls"] is True
    assert [t["function"]["name"] for t in first["tools"]] == ["sleepy"]


def test_paths_stay_inside_the_root_with_the_inputs_rules(
    llm: LLMServer, project: Path, tmp_path: Path
) -> None:
    (tmp_path / "outside.txt").write_text("secret plans\n")
    os.symlink(tmp_path / "outside.txt", project / "link.txt")
    asked = ["../outside.txt", "/etc/passwd", "link.txt", "build/out.txt", ".env", "helper.py"]
    llm.script(first_round, tool_calls=[call("read_file", path=p) for p in asked])
    llm.script(None, "ok")
    result = run(project, recipe(tools=["fs"]), cache=False)
    contents = [m["content"] for m in tool_messages(llm.requests[-1].body)]
    assert "contains '..'" in contents[0] and "is absolute" in contents[1]
    for refused in contents[2:5]:
        assert "not a file tools may read" in refused
    assert "return 42" in contents[5] and contents[5].startswith('<file path="tool read_file')
    assert "secret plans" not in "".join(contents)
    assert [c.ok for c in result.results[0].tool_calls] == [False] * 5 + [True]


def test_secrets_are_redacted_and_search_is_literal_and_bounded(
    llm: LLMServer, project: Path
) -> None:
    llm.script(
        first_round,
        tool_calls=[
            call("read_file", path="config.py"),
            call("search", pattern="sk-proj"),
            call("search", pattern=r"def \w+\(\):$", regex=True),
            call("search", pattern="answer()"),
            call("list_dir", path="."),
            call("read_file", path="helper.py", start_line=2, end_line=2),
        ],
    )
    llm.script(None, "ok")
    run(project, recipe(tools=["fs"]), cache=False)
    contents = [m["content"] for m in tool_messages(llm.requests[-1].body)]
    assert "[REDACTED:" in contents[0] and "abcdefghijklmnop" not in contents[0]
    assert contents[1].endswith("no matches\n</file>")  # searched the redacted text
    assert "helper.py:1: def answer():" in contents[2]  # a regex (its timeout: test_tools_safety)
    assert "main.py:2: print(answer())" in contents[3]  # literal: the parentheses too
    listed = contents[4].splitlines()[1:-1]
    assert listed == [
        ".gitignore",
        "config.py",
        "helper.py",
        "main.py",
        "notes/",
    ]  # no .env, build/
    assert "[lines 2-2 of 2]\n    return 42" in contents[5]


def test_mistakes_go_back_to_the_model(llm: LLMServer, project: Path) -> None:
    llm.script(
        first_round,
        tool_calls=[
            call("read_file", path=3),
            {"function": {"name": "read_file", "arguments": "{not json"}},
            call("no_such_tool"),
        ],
    )
    llm.script(None, "ok")
    result = run(project, recipe(tools=["fs"]), cache=False)
    contents = [m["content"] for m in tool_messages(llm.requests[-1].body)]
    assert "error: path: 3 is not of type 'string'" in contents[0]
    assert "error: the arguments are not JSON" in contents[1]
    assert "there is no tool named 'no_such_tool'" in contents[2]
    assert result.exit_code == 0 and result.results[0].text == "ok"


def test_the_round_limit_asks_for_an_answer_without_tools(llm: LLMServer, project: Path) -> None:
    llm.script(lambda body: body.get("tool_choice") == "none", "final answer")
    llm.script(None, tool_calls=[call("list_dir", path=".")])
    notices: list[str] = []
    result = run(
        project, recipe(tools=["fs"], max_tool_rounds=1), cache=False, on_notice=notices.append
    )
    assert result.results[0].text == "final answer"
    assert [r.body.get("tool_choice") for r in llm.requests] == [None, "none"]
    assert any("max_tool_rounds (1)" in n for n in notices)


def test_a_round_that_repeats_the_last_one_is_stopped(llm: LLMServer, project: Path) -> None:
    llm.script(lambda body: body.get("tool_choice") == "none", "stopped")
    llm.script(None, tool_calls=[call("list_dir", path=".")])
    notices: list[str] = []
    result = run(project, recipe(tools=["fs"]), cache=False, on_notice=notices.append)
    assert result.results[0].text == "stopped"
    assert len(llm.requests) == 3  # the calls, the same calls again, the answer
    assert any("repeated its previous tool calls" in n for n in notices)


def test_oversized_command_output_is_truncated_with_a_note(llm: LLMServer, project: Path) -> None:
    loud = {
        "name": "loud",
        "description": "prints a lot",
        "command": [PY, "-c", "print('x' * 500000)"],
    }
    llm.script(first_round, tool_calls=[call("loud")])
    llm.script(None, "ok")
    result = run(project, recipe(tools=[loud]), cache=False)
    content = tool_messages(llm.requests[-1].body)[0]["content"]
    assert "[output truncated" in content and len(content) < 40_000
    assert result.results[0].tool_calls[0].bytes == 500_001


def test_commands_get_whole_arguments_confined_paths_and_no_secrets(
    llm: LLMServer, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-loopback-key-0000")
    show = {
        "name": "show",
        "description": "print an argument and the environment",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "format": "path"},
                "word": {"type": "string"},
            },
        },
        "command": [
            PY,
            "-c",
            "import os, sys; print(sys.argv[1:], sorted(os.environ))",
            "{{ word }}",
            "{{ path }}",
        ],
    }
    llm.script(
        first_round,
        tool_calls=[
            call("show", word="a b; rm -rf /", path="notes"),
            call("show", path="../x"),
            call("show", word="--output=/tmp/x"),
        ],
    )
    llm.script(None, "ok")
    run(project, recipe(tools=[show]), cache=False)
    contents = [m["content"] for m in tool_messages(llm.requests[-1].body)]
    assert "['a b; rm -rf /', 'notes']" in contents[0]
    assert "OPENAI_API_KEY" not in contents[0] and "'PATH'" in contents[0]
    assert "contains '..'" in contents[1]
    assert "starts with '-'" in contents[2]


def test_a_rerun_replays_every_round_from_the_cache(llm: LLMServer, project: Path) -> None:
    offered = lambda body: "tools" in body and first_round(body)  # noqa: E731 - a rule
    llm.script(offered, tool_calls=[call("read_file", path="helper.py")])
    llm.script(None, lambda body: "saw " + str(len(tool_messages(body))))
    first = run(project, recipe(tools=["fs"]))
    assert first.results[0].text == "saw 1" and len(llm.requests) == 2
    llm.clear()
    again = run(project, recipe(tools=["fs"]))
    assert again.results[0].text == "saw 1" and llm.requests == []
    assert again.results[0].tool_calls[0].name == "read_file"
    llm.clear()
    without = run(project, recipe())  # the tools are part of the key: no answer reused
    assert without.results[0].text == "saw 0" and len(llm.requests) == 1


def test_an_endpoint_that_refuses_tools_stops_the_run_naming_it(
    llm: LLMServer, project: Path
) -> None:
    llm.script(None, status=400, error={"message": "tools are not supported by this model"})
    with pytest.raises(FatalLLMError, match=r"127\.0\.0\.1:\d+/v1 does not accept tools"):
        run(project, recipe(tools=["fs"]), cache=False)
    assert len(llm.requests) == 1


def test_merge_calls_get_no_tools(llm: LLMServer, project: Path) -> None:
    llm.script(lambda body: "tools" in body and first_round(body), tool_calls=[call("list_dir")])
    llm.script(None, "part")
    rec = recipe(tools=["fs"], merge={"strategy": "llm"}, chunking={"by": "file"})
    run_section([str(project)], rec, options=RunOptions(tool_root=str(project), cache=False))
    merges = [r.body for r in llm.requests if "part" in json.dumps(r.body)]
    assert merges and all("tools" not in body for body in merges)


def test_recipe_keys_and_flags(llm: LLMServer, project: Path) -> None:
    with pytest.raises(RecipeError, match="names 'dir', which is not one of this tool's"):
        parse_recipe("tools:\n  - name: ls\n    description: d\n    command: [ls, '{{ dir }}']\n")
    with pytest.raises(RecipeError, match="unknown built-in tool 'git'"):
        parse_recipe("tools: [git]\n")
    llm.script(first_round, tool_calls=[call("list_dir")])
    llm.script(None, "ok")
    args = ["section", str(project / "main.py"), "-m", "test-model", "--format", "json"]
    flags = ["--tools", "fs", "--max-tool-rounds", "2", "--tool-concurrency", "2", "--no-cache"]
    done = CliRunner().invoke(app, [*args, *flags])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["tasks"][0]["tool_calls"][0]["name"] == "list_dir"
    assert set(doc["tasks"][0]["tool_calls"][0]) == {
        "name",
        "arguments",
        "ok",
        "error",
        "duration_s",
        "bytes",
    }
    dry = CliRunner().invoke(app, [*args[:-2], "--tools", "fs", "--dry-run"])
    assert "tools offered to worker calls: fs" in dry.output
    assert "the estimate counts one round per call" in dry.output


def test_the_shipped_recipe_opens_the_neighbouring_files(llm: LLMServer, project: Path) -> None:
    from parallelize.recipe.load import find_recipe

    shipped = find_recipe("explain-with-tools")
    asks = lambda body: first_round(body) and "main.py" in body["messages"][-1]["content"]  # noqa: E731
    llm.script(asks, tool_calls=[call("read_file", path="helper.py")])
    llm.script(lambda body: first_round(body), "explained")
    llm.script(None, lambda body: "uses " + tool_messages(body)[0]["content"].splitlines()[2])
    rec = shipped.model_copy(update={"model": "test-model"})
    result = run_section([str(project)], rec, options=RunOptions(tool_root=str(project)))
    by_path = {r.task.paths[0].rsplit("/", 1)[-1]: r.text for r in result.results}
    assert by_path["main.py"] == "uses     return 42"
    assert result.exit_code == 0
