"""MCP servers over stdio as a tool source: a real server (tests/mcpserver.py, written with the
SDK) is started, listed and called; concurrency, errors, crashes, timeouts, bounds, the
environment and the process's end are checked against that real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

pytest.importorskip("mcp", reason="the optional `mcp` extra is not installed")

from parallelize.cli import app
from parallelize.engine.executor import SAME_SIGNAL
from parallelize.errors import ConfigError
from parallelize.tools.base import ToolOutcome
from parallelize.tools.mcp import (
    STDERR_TAIL_BYTES,
    McpSource,
    block_text,
    offered_specs,
    open_mcp_source,
)

SERVER = [sys.executable, str(Path(__file__).with_name("mcpserver.py"))]
SECRET = "sk-mcp-test-secret-0123456789"
#: What the SDK itself passes on (mcp 2.x merges these over ours); none of them is a secret.
SDK_ENV = {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"}


def gone(pid: int) -> bool:
    """Whether no process `pid` exists any more (a reaped child)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def server_pid(source: McpSource) -> int:
    return int(json.loads(source.call("info", {}, timeout=5).text)["pid"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpSource]:
    """One server for the tests that leave it running, started with a key in our environment."""
    root = tmp_path_factory.mktemp("mcproot")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", SECRET)
        env.setenv("PARALLELIZE_API_KEY", SECRET)
        env.setenv("SOME_TOKEN", SECRET)
        source = open_mcp_source(SERVER, root=root, timeout=20, max_output_chars=1_000)
    yield source
    source.close()


def test_tools_list_becomes_the_offered_specs(server: McpSource) -> None:
    specs = {spec.name: spec for spec in server.specs()}
    assert {"echo", "sleep_then_echo", "fail", "crash", "hang"} <= set(specs)
    echo = specs["echo"].offer()["function"]
    assert echo["description"] == "Return the text unchanged."
    assert echo["parameters"]["type"] == "object"
    assert echo["parameters"]["required"] == ["text"]


def test_a_call_returns_its_text(server: McpSource) -> None:
    outcome = server.call("echo", {"text": "héllo"}, timeout=5)
    assert outcome == ToolOutcome(
        ok=True, text="héllo", duration_s=outcome.duration_s, bytes=len("héllo".encode())
    )


def test_calls_from_many_threads_run_at_once(server: McpSource) -> None:
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(
            pool.map(
                lambda n: server.call(
                    "sleep_then_echo", {"seconds": 0.2, "text": f"c{n}"}, timeout=5
                ),
                range(3),
            )
        )
    assert [o.text for o in outcomes] == ["c0", "c1", "c2"]
    log = json.loads(server.call("events", {}, timeout=5).text)
    starts = [i for i, event in enumerate(log) if event.startswith("start c")]
    ends = [i for i, event in enumerate(log) if event.startswith("end c")]
    assert len(starts) == len(ends) == 3
    assert max(starts) < min(ends), log  # every call started before the first one ended


def test_is_error_is_a_failed_outcome_with_the_reason(server: McpSource) -> None:
    outcome = server.call("fail", {"reason": "the disk is on fire"}, timeout=5)
    assert not outcome.ok
    assert "the disk is on fire" in (outcome.error or "")
    assert outcome.text == ""  # a one-line error is not said twice


def test_a_hanging_tool_hits_the_timeout_and_the_server_stays_usable(server: McpSource) -> None:
    outcome = server.call("hang", {}, timeout=0.3)
    assert not outcome.ok
    assert "no answer within 0.3 s" in (outcome.error or "")
    assert server.call("echo", {"text": "still here"}, timeout=5).text == "still here"


def test_unknown_tool_and_bad_arguments_are_outcomes(server: McpSource) -> None:
    unknown = server.call("nope", {}, timeout=5)
    assert not unknown.ok and "unknown tool 'nope'" in (unknown.error or "")
    bad = server.call("echo", {"wrong": 1}, timeout=5)
    assert not bad.ok and bad.error


def test_output_over_the_cap_is_truncated_with_a_note(server: McpSource) -> None:
    outcome = server.call("big", {"size": 50_000}, timeout=5)
    assert outcome.ok
    assert outcome.bytes == 50_000
    assert outcome.text.startswith("x" * 1_000)
    assert "\n[output truncated: the first 1,000 of 50,000 characters" in outcome.text


def test_non_text_blocks_are_described(server: McpSource) -> None:
    outcome = server.call("picture", {}, timeout=5)
    assert outcome.text.splitlines() == [
        "a caption",
        "[image block: image/png, ~9 bytes, not shown]",
    ]


def test_the_server_gets_a_minimal_environment_without_the_key(server: McpSource) -> None:
    seen = json.loads(server.call("environment", {}, timeout=5).text)
    assert SECRET not in json.dumps(seen)
    assert set(seen) <= {"PATH", "HOME", "LANG", "TMPDIR"} | SDK_ENV, sorted(seen)
    assert "PATH" in seen


def test_the_server_runs_in_the_root(server: McpSource, tmp_path_factory) -> None:
    cwd = json.loads(server.call("info", {}, timeout=5).text)["cwd"]
    assert Path(cwd).name.startswith("mcproot")


def test_stderr_is_captured_and_bounded(server: McpSource, capfd: pytest.CaptureFixture) -> None:
    assert server.call("noisy", {"size": 200_000}, timeout=5).text == "done"
    assert server.call("echo", {"text": "after"}, timeout=5).ok  # stderr drained, no stall
    assert "eeee" not in capfd.readouterr().err  # nothing reached our terminal
    assert len(server._stderr.text()) <= STDERR_TAIL_BYTES


def test_a_crashing_server_gives_failed_outcomes_not_exceptions(tmp_path: Path) -> None:
    source = open_mcp_source(SERVER, root=tmp_path, timeout=20)
    try:
        crashed = source.call("crash", {}, timeout=5)
        assert not crashed.ok
        assert "crashing on purpose" in (crashed.error or "")  # the last word on its stderr
        after = source.call("echo", {"text": "anyone?"}, timeout=5)
        assert not after.ok and after.error
    finally:
        source.close()


def test_close_ends_the_server_process(tmp_path: Path) -> None:
    source = open_mcp_source(SERVER, root=tmp_path, timeout=20)
    pid = server_pid(source)
    assert not gone(pid)
    source.close()
    assert gone(pid)
    closed = source.call("echo", {"text": "late"}, timeout=5)
    assert not closed.ok and "was closed" in (closed.error or "")
    source.close()  # twice is harmless


def test_the_server_does_not_outlive_an_interrupted_run(tmp_path: Path) -> None:
    """Ctrl-C in the middle of a library run, no close(): the exit hook still ends the server
    (with a call in flight a server does not leave on its own when its stdin closes)."""
    script = textwrap.dedent(
        f"""
        import json, sys, threading, time
        from pathlib import Path
        from parallelize.tools.mcp import open_mcp_source
        source = open_mcp_source({SERVER!r}, root=Path({str(tmp_path)!r}), timeout=20)
        print(json.loads(source.call("info", {{}}, timeout=5).text)["pid"], flush=True)
        hang = lambda: source.call("hang", {{}}, timeout=30)
        threading.Thread(target=hang, daemon=True).start()
        time.sleep(0.3)
        raise KeyboardInterrupt
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert "KeyboardInterrupt" in done.stderr
    assert gone(int(done.stdout.strip()))


def server_children(parent: int) -> list[int]:
    """The pids of `parent`'s children that run tests/mcpserver.py (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:  # not a process, or it ended while we looked
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"mcpserver.py" in command:
            found.append(int(entry.name))
    return found


def test_ctrl_c_on_the_entry_point_ends_the_server(
    llm: LLMServer, entry_point: str, tmp_path: Path
) -> None:
    """Ctrl-C twice (stop now) while a tool call hangs: exit 130 and the server is gone."""
    (tmp_path / "notes.txt").write_text("hello\n", encoding="utf-8")
    (tmp_path / "mcp.yaml").write_text(
        "model: test-model\nprompt: '{{ input }}'\ntools:\n  - mcp: " + json.dumps(SERVER) + "\n",
        encoding="utf-8",
    )
    llm.script(None, tool_calls=[{"function": {"name": "hang", "arguments": {}}}])
    args = [entry_point, "section", "notes.txt", "--recipe", "mcp.yaml", "--no-cache"]
    run = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    limit = time.monotonic() + 30
    pids: list[int] = []
    while not (pids and llm.count()) and time.monotonic() < limit and run.poll() is None:
        time.sleep(0.05)  # a limit, not an assertion: until the tool call is under way
        pids = pids or server_children(run.pid)
    assert pids and llm.count() == 1
    run.send_signal(signal.SIGINT)
    time.sleep(SAME_SIGNAL + 0.3)  # a second signal sooner would count as the same one
    run.send_signal(signal.SIGINT)  # the second one: stop now
    _, stderr = run.communicate(timeout=30)
    assert run.returncode == 130, stderr
    assert b"Traceback" not in stderr
    assert all(gone(pid) for pid in pids)


def test_a_server_that_never_answers_is_a_start_up_error(tmp_path: Path) -> None:
    silent = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    with pytest.raises(ConfigError) as caught:
        open_mcp_source(silent, root=tmp_path, timeout=0.5)
    assert "did not start" in str(caught.value)
    assert "sys.stdin.read()" in str(caught.value)  # the command is named
    assert "within 0.5 s" in str(caught.value)
    assert caught.value.exit_code == 2


def test_a_command_that_does_not_exist_is_a_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no-such-mcp-server-xyz --flag` did not start"):
        open_mcp_source(["no-such-mcp-server-xyz", "--flag"], root=tmp_path, timeout=5)


def test_a_server_that_exits_at_once_says_why(tmp_path: Path) -> None:
    dying = [sys.executable, "-c", "import sys; sys.exit('mcp: bad config file')"]
    with pytest.raises(ConfigError) as caught:
        open_mcp_source(dying, root=tmp_path, timeout=5)
    assert str(caught.value).count("(its stderr ends: mcp: bad config file)") == 1


def test_without_the_mcp_package_the_cli_says_how_to_install_it(
    llm: LLMServer, tmp_path: Path
) -> None:
    """The entry point, with `mcp` made unimportable: exit 2 and one line naming the extra."""
    (tmp_path / "notes.txt").write_text("hello\n", encoding="utf-8")
    (tmp_path / "mcp.yaml").write_text(
        "model: test-model\nprompt: '{{ input }}'\ntools:\n  - mcp: [my-server]\n",
        encoding="utf-8",
    )
    script = textwrap.dedent(
        """
        import sys
        sys.modules["mcp"] = None  # as if the optional extra were not installed
        from parallelize.cli import main
        sys.argv = ["parallelize", "section", "notes.txt", "--recipe", "mcp.yaml", "--no-cache"]
        main()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: tools: mcp needs the `mcp` package, which is not installed "
        "(pip install 'parallelize[mcp]')"
    ]
    assert llm.requests == []


def test_offered_names_are_ones_an_endpoint_accepts() -> None:
    specs, names = offered_specs(
        [
            {"name": "repo.search", "description": "d" * 5_000, "inputSchema": {"type": "object"}},
            {"name": "repo/search", "inputSchema": {"type": "array"}},  # a clash once cleaned
            {"name": "", "inputSchema": {"type": "object"}},
            {"name": "plain"},
        ]
    )
    assert [spec.name for spec in specs] == ["repo_search", "plain"]
    assert names == {"repo_search": "repo.search", "plain": "plain"}
    assert len(specs[0].description) == 1_024
    assert specs[1].parameters == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("block", "text"),
    [
        ({"type": "text", "text": "hi"}, "hi"),
        ({"type": "audio", "data": "AAAA", "mimeType": "audio/wav"}, "[audio block: audio/wav"),
        (
            {"type": "resource_link", "uri": "file:///a", "name": "a"},
            "[resource link: file:///a a]",
        ),
        ({"type": "resource", "resource": {"uri": "u", "text": "body"}}, "[resource u]\nbody"),
        ({"type": "resource", "resource": {"uri": "u", "blob": "AAAA"}}, "[resource u: binary"),
        ({"type": "hologram"}, "[hologram block, not shown]"),
    ],
)
def test_every_block_kind_becomes_text(block: dict, text: str) -> None:
    assert block_text(block).startswith(text)


def test_a_recipe_with_an_mcp_server_runs_end_to_end(llm: LLMServer, tmp_path: Path) -> None:
    """Through the CLI: the model calls three MCP tools in one reply, reads their answers, and
    the server is gone when the run is over."""
    (tmp_path / "notes.txt").write_text("what does the server say?\n", encoding="utf-8")
    recipe = tmp_path / "mcp.yaml"
    recipe.write_text(
        "model: test-model\nprompt: '{{ input }}'\ntools:\n  - mcp: " + json.dumps(SERVER) + "\n",
        encoding="utf-8",
    )

    def call(name: str, **arguments: object) -> dict:
        return {"function": {"name": name, "arguments": arguments}}

    def tool_texts(body: dict) -> list[str]:
        return [m["content"] for m in body["messages"] if m.get("role") == "tool"]

    llm.script(
        lambda body: body["messages"][-1]["role"] == "user",
        tool_calls=[call("echo", text="ping"), call("info"), call("fail", reason="no such row")],
    )
    llm.script(None, lambda body: json.dumps(tool_texts(body)))
    done = CliRunner().invoke(
        app, ["section", str(tmp_path / "notes.txt"), "--recipe", str(recipe), "--format", "json"]
    )
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    calls = doc["tasks"][0]["tool_calls"]
    assert [(c["name"], c["ok"]) for c in calls] == [
        ("echo", True),
        ("info", True),
        ("fail", False),
    ]
    assert "no such row" in calls[2]["error"]
    offered = {tool["function"]["name"] for tool in llm.requests[0].body["tools"]}
    assert {"echo", "info", "sleep_then_echo"} <= offered
    answers = json.loads(doc["tasks"][0]["output"])  # the reply: the tool messages it was sent
    assert "ping" in answers[0]
    assert "no such row" in answers[2]
    pid = int(re.search(r'"pid": (\d+)', answers[1]).group(1))
    assert gone(pid)  # the run closed the server
