"""Tools (issue 15) where they could hurt: commands that outlive a run, a server that never
stops calling tools, errors mistaken for "no tools here", timeouts, the root tools see.

Everything runs against the loopback server over HTTP; tools and commands run for real.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from llmserver import LLMServer
from test_tools import call, first_round, recipe, run, tool_messages

from parallelize.engine.executor import SAME_SIGNAL
from parallelize.errors import FatalLLMError
from parallelize.recipe.tools import CommandTool
from parallelize.tools.command import CommandSource
from parallelize.tools.fs import FsTools
from parallelize.tools.root import RootFiles

PY = sys.executable


def gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie waiting for its reaper has ended too)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, within: float = 5.0) -> bool:
    limit = time.monotonic() + within
    while not gone(pid) and time.monotonic() < limit:
        time.sleep(0.05)  # a limit, not an assertion: a kill takes a moment to show
    return gone(pid)


@pytest.fixture
def project(make_tree: Any) -> Path:
    return make_tree({"main.py": "print(42)\n", "aaa.txt": "a" * 40 + "!\n"})


def test_a_context_overflow_in_a_later_round_is_not_called_refused_tools(
    llm: LLMServer, project: Path
) -> None:
    overflow = (
        "This model's maximum context length is 8192 tokens. However, your messages resulted "
        "in 9000 tokens (500 in the functions)."
    )
    llm.script(first_round, tool_calls=[call("list_dir")])
    llm.script(None, status=400, error={"message": overflow, "code": "context_length_exceeded"})
    result = run(project, recipe(tools=["fs"]), cache=False)  # no FatalLLMError
    assert result.results[0].status == "failed"
    assert "does not accept tools" not in (result.results[0].error or "")


def test_a_later_rounds_400_naming_a_function_keeps_its_own_message(
    llm: LLMServer, project: Path
) -> None:
    llm.script(first_round, tool_calls=[call("list_dir")])
    llm.script(None, status=400, error={"message": "unknown parameter: function_call_mode"})
    with pytest.raises(FatalLLMError) as caught:
        run(project, recipe(tools=["fs"]), cache=False)
    assert "does not accept tools" not in str(caught.value)
    assert "function_call_mode" in str(caught.value)


def test_a_server_that_ignores_tool_choice_is_asked_without_tools(
    llm: LLMServer, project: Path
) -> None:
    llm.script(lambda body: "tools" not in body, "the answer")
    llm.script(None, tool_calls=[call("list_dir")])
    result = run(project, recipe(tools=["fs"], max_tool_rounds=1), cache=False)
    assert result.results[0].text == "the answer" and result.exit_code == 0
    assert [("tools" in r.body, r.body.get("tool_choice")) for r in llm.requests] == [
        (True, None),
        (True, "none"),
        (False, None),
    ]


def test_a_server_that_calls_tools_forever_fails_the_task(llm: LLMServer, project: Path) -> None:
    llm.script(None, tool_calls=[call("list_dir")])
    result = run(project, recipe(tools=["fs"], max_tool_rounds=1), cache=False)
    assert result.results[0].status == "failed"
    assert "still calling tools after max_tool_rounds (1)" in (result.results[0].error or "")
    assert result.exit_code != 0


def command(name: str, code: str, *, timeout: float = 10) -> dict[str, Any]:
    return {"name": name, "description": name, "command": [PY, "-c", code], "timeout": timeout}


def test_a_background_child_of_a_finished_command_is_ended(llm: LLMServer, project: Path) -> None:
    spawn = (
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print('child', p.pid)"
    )
    llm.script(first_round, tool_calls=[call("spawn")])
    llm.script(None, "ok")
    result = run(project, recipe(tools=[command("spawn", spawn)]), cache=False)
    assert result.results[0].tool_calls[0].ok
    found = re.search(r"child (\d+)", tool_messages(llm.requests[-1].body)[0]["content"])
    assert found and wait_gone(int(found.group(1)))


def test_a_declared_command_that_runs_too_long_is_killed(llm: LLMServer, project: Path) -> None:
    llm.script(first_round, tool_calls=[call("slow")])
    llm.script(None, "ok")
    slow = command("slow", "import time; print('begun', flush=True); time.sleep(60)", timeout=0.5)
    result = run(project, recipe(tools=[slow]), cache=False)
    record = result.results[0].tool_calls[0]
    assert not record.ok and record.error == "timed out after 0.5s"
    assert "error: timed out after 0.5s" in tool_messages(llm.requests[-1].body)[0]["content"]


def test_ctrl_c_on_the_entry_point_ends_a_running_command(
    llm: LLMServer, entry_point: str, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("hello\n", encoding="utf-8")
    sleeper = "import os, time; open('pid', 'w').write(str(os.getpid())); time.sleep(60)"
    (tmp_path / "cmd.yaml").write_text(
        "model: test-model\nprompt: '{{ input }}'\ntools:\n  - name: nap\n    description: d\n"
        f"    command: [{PY!r}, '-c', {sleeper!r}]\n    timeout: 120\n",
        encoding="utf-8",
    )
    llm.script(None, tool_calls=[call("nap")])
    args = [entry_point, "section", "notes.txt", "--recipe", "cmd.yaml", "--no-cache"]
    run = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pid_file = tmp_path / "pid"
    limit = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < limit:
        time.sleep(0.05)  # a limit, not an assertion: until the command is under way
    pid = int(pid_file.read_text())
    run.send_signal(signal.SIGINT)
    time.sleep(SAME_SIGNAL + 0.3)  # a second signal sooner would count as the same one
    run.send_signal(signal.SIGINT)  # the second one: stop now
    _, stderr = run.communicate(timeout=30)
    assert run.returncode == 130, stderr
    assert wait_gone(pid)


def test_a_catastrophic_regular_expression_runs_out_of_time(project: Path) -> None:
    tools = FsTools(RootFiles(str(project)))
    outcome = tools.call("search", {"pattern": "(a|aa)+$", "regex": True}, timeout=0.3)
    assert not outcome.ok and outcome.error is not None
    assert "ran out of time" in outcome.error


def test_the_command_source_closes_with_its_commands(project: Path) -> None:
    tool = CommandTool.model_validate(
        command(
            "nap",
            "import os, time; open('pid', 'w').write(str(os.getpid())); time.sleep(60)",
            timeout=120,
        )
    )
    source = CommandSource(tool, RootFiles(str(project)))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(source.call, "nap", {}, timeout=120)
        limit = time.monotonic() + 10
        pid_file = project / "pid"
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < limit:
            time.sleep(0.05)  # a limit: until the command runs
        source.close()
        outcome = pending.result(timeout=10)
    assert not outcome.ok
    assert wait_gone(int(pid_file.read_text()))


def test_a_reply_runs_at_most_32_calls_and_the_rest_are_errors(
    llm: LLMServer, project: Path
) -> None:
    llm.script(first_round, tool_calls=[call("list_dir") for _ in range(40)])
    llm.script(None, "ok")
    result = run(project, recipe(tools=["fs"]), cache=False)
    contents = [m["content"] for m in tool_messages(llm.requests[-1].body)]
    assert len(contents) == 40 and all("main.py" in c for c in contents[:32])
    assert all("at most 32 tool calls" in c for c in contents[32:])
    assert [r.ok for r in result.results[0].tool_calls] == [True] * 32 + [False] * 8


def test_a_tasks_tool_results_stop_at_256_kb(llm: LLMServer, project: Path) -> None:
    loud = command("loud", "import sys; print('x' * 40000, sys.argv[1:])")
    loud["parameters"] = {"type": "object", "properties": {"n": {"type": "string"}}}
    loud["command"] = [*loud["command"], "{{ n }}"]
    llm.script(first_round, tool_calls=[call("loud", n=str(i)) for i in range(9)])
    llm.script(lambda body: len(tool_messages(body)) == 9, tool_calls=[call("loud", n="again")])
    llm.script(None, "ok")
    result = run(project, recipe(tools=[loud]), cache=False)
    contents = [m["content"] for m in tool_messages(llm.requests[-1].body)]
    assert len(contents) == 10 and all("[output truncated" in c for c in contents[:8])
    assert all("passed 256 KB" in c and "xxxx" not in c for c in contents[8:])
    assert result.results[0].text == "ok"


def test_progress_lines_count_tool_names_and_are_never_folded_as_errors(
    llm: LLMServer, project: Path
) -> None:
    from typer.testing import CliRunner

    from parallelize.cli import app

    calls = [call("read_file", path="main.py")] * 13 + [call("search", pattern="x")] * 3
    llm.script(first_round, tool_calls=calls)
    llm.script(None, "ok")
    args = ["section", str(project), "--by", "file", "--tools", "fs", "-m", "test-model"]
    done = CliRunner().invoke(app, [*args, "--no-cache"])
    assert done.exit_code == 0, done.output
    lines = [line for line in done.stderr.splitlines() if line.startswith("[tools]")]
    assert len(lines) == 2 and all("16 tool calls (read_file x13, search x3)" in x for x in lines)
    assert "same error as" not in done.stderr
