"""Issue 12, the server side: an endpoint that lies, stalls, echoes headers and sends malformed
shapes. Every test runs the installed entry point against tests/hostileserver.py and asserts
the exit code, and that neither the key nor a traceback appears anywhere: stdout, stderr, the
output files, the manifest, the cache.
"""

from __future__ import annotations

import email.utils
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostileserver import (
    Act,
    HostileServer,
    absurd_headers,
    completion,
    echo_headers,
    huge,
    malformed,
    trickle,
)
from typer.testing import CliRunner

from parallelize.cli.app import app

KEY = "sk-hostile-SECRET-0123456789abcdef"
FILES = {"a.py": "print('a')\n", "b.py": "print('b')\n", "c.py": "print('c')\n"}


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    elapsed: float
    written: str  # every file under the test's directory (outputs, manifest, cache)


@pytest.fixture(scope="module")
def _hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


@pytest.fixture
def hostile(_hostile: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    _hostile.script(Act(200, completion()))
    monkeypatch.setenv("OPENAI_BASE_URL", _hostile.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return _hostile


@pytest.fixture
def run(entry_point: str, tmp_path: Path, make_tree, monkeypatch: pytest.MonkeyPatch):
    """Run `parallelize ARGS` on a small tree (PATH `src`) with the cache under tmp_path: in
    this process (CliRunner), or through the installed entry point with `entry=True`."""
    make_tree(FILES)
    monkeypatch.chdir(tmp_path)

    def go(
        *args: str,
        stdin: str | None = None,
        model: str | None = "test-model",
        entry: bool = False,
    ) -> Ran:
        argv = [*args, "--cache-dir", str(tmp_path / "cache")]
        argv += ["-m", model] if model else []
        started = time.monotonic()
        if entry:
            done = subprocess.run(
                [entry_point, *argv],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
                env=dict(os.environ),
            )
            code, out, err = done.returncode, done.stdout, done.stderr
        else:
            result = CliRunner().invoke(app, argv, input=stdin)
            assert not isinstance(result.exception, Exception) or isinstance(
                result.exception, SystemExit
            ), repr(result.exception)
            code, out, err = result.exit_code, result.stdout, result.stderr
        return Ran(code, out, err, time.monotonic() - started, _all(tmp_path))

    return go


def _all(root: Path) -> str:
    """Every file's bytes under `root` (the cache's SQLite file too), as one text to search."""
    parts = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            parts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def assert_clean(ran: Ran, *secrets: str) -> None:
    for secret in (KEY, *secrets):
        for where, text in (("stdout", ran.stdout), ("stderr", ran.stderr), ("files", ran.written)):
            assert secret not in text, f"the secret leaked into {where}"
    assert "Traceback" not in ran.stderr and "Traceback" not in ran.stdout


# ---- 1. the key leaks ----


@pytest.mark.parametrize(("status", "html"), [(401, False), (500, True), (502, False)])
def test_an_error_body_echoing_the_authorization_header_is_masked_everywhere(
    hostile: HostileServer, run, tmp_path: Path, status: int, html: bool
) -> None:
    hostile.script(echo_headers(status, html=html))
    args = ["section", "src", "-p", "x", "--max-retries", "1", "--format", "json", "-o", "o.json"]
    ran = run(*args, entry=True)
    assert ran.code == (2 if status == 401 else 1), ran.stderr
    assert_clean(ran)
    assert "[REDACTED:api-key]" in ran.stderr + ran.written  # the echo was there, and masked
    assert hostile.chat_requests()[0].headers["Authorization"] == f"Bearer {KEY}"


def test_a_completion_echoing_the_key_is_masked_in_results_out_dir_manifest_and_cache(
    hostile: HostileServer, run
) -> None:
    hostile.script(Act(200, lambda headers, _: completion(f"auth was {headers['Authorization']}")))
    ran = run("section", "src", "--by", "file", "-p", "x", "--out-dir", "out")
    assert ran.code == 0, ran.stderr
    assert_clean(ran)
    assert "auth was Bearer [REDACTED:api-key]" in ran.written
    again = run("section", "src", "--by", "file", "-p", "x")  # from the cache
    assert again.stdout.count("[REDACTED:api-key]") == 3
    assert_clean(again)


def test_user_info_in_the_base_url_is_never_printed(
    hostile: HostileServer, run, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "hunter2-very-secret"
    url = hostile.base_url.replace("http://", f"http://admin:{password}@")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    hostile.script(echo_headers(502))
    ran = run("section", "src", "-p", "x", "--max-retries", "0", "--format", "json")
    assert ran.code == 1
    assert_clean(ran, password)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://admin:{password}@127.0.0.1:9/v1")
    refused = run("section", "src", "-p", "x", "--max-retries", "0")
    assert refused.code != 0
    assert_clean(refused, password)


@pytest.mark.parametrize("bad", ["\r", "\n", " ", "\t", "\x1b"])
def test_a_key_with_whitespace_or_a_control_character_is_exit_2_naming_the_variable(
    hostile: HostileServer, run, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY + bad)
    ran = run("section", "src", "-p", "x")
    assert ran.code == 2
    assert "OPENAI_API_KEY contains whitespace or a control character" in ran.stderr
    assert_clean(ran)
    assert hostile.chat_requests() == []


@pytest.mark.parametrize("hider", ["\x1b[0m", "\u200b"])
def test_a_key_split_by_an_invisible_character_is_masked_on_a_terminal_and_in_results(
    hostile: HostileServer, run, monkeypatch: pytest.MonkeyPatch, hider: str
) -> None:
    monkeypatch.setenv("FORCE_TERMINAL", "1")  # the Rich progress line
    split = KEY[:9] + hider + KEY[9:]
    error = json.dumps({"error": {"message": f"bad key {split}"}}).encode()
    hostile.script(Act(500, error))
    ran = run("section", "src", "-p", "x", "--max-retries", "0")
    assert ran.code == 1
    hostile.script(Act(200, completion(f"the key is {split}")))
    answered = run("section", "src", "-p", "x", "--out-dir", "out")
    assert answered.code == 0, answered.stderr
    for text in (ran.stderr, answered.stdout, answered.stderr, answered.written):
        assert KEY not in text.replace(hider, "")
    assert "[REDACTED:api-key]" in ran.stderr and "[REDACTED:api-key]" in answered.written


def test_every_string_of_a_reply_is_masked_before_the_cache(hostile: HostileServer, run) -> None:
    call = {"id": KEY, "type": "function", "function": {"name": KEY, "arguments": KEY}}
    message = {"content": "text", "tool_calls": [call]}
    body = completion(model=KEY, choices=[{"message": message, "finish_reason": KEY}])
    hostile.script(malformed(body))
    ran = run("section", "src", "-p", "x", "--format", "json")
    assert ran.code == 0, ran.stderr
    assert_clean(ran)  # the cache file included


@pytest.mark.parametrize(
    "listing",
    [b'{"data": [{"id": 1}, {"id": 2}]}', b'{"data": [{"id": {}}]}', b'{"data": "x"}', b"[1]"],
)
def test_a_malformed_model_listing_is_a_clear_error(
    hostile: HostileServer, run, listing: bytes
) -> None:
    hostile.models = listing
    ran = run("section", "src", "-p", "x", model=None)
    assert ran.code == 2, ran.stderr
    assert "no model chosen" in ran.stderr and "Traceback" not in ran.stderr


def test_a_listed_model_id_is_shown_safe_and_short(hostile: HostileServer, run) -> None:
    ids = [{"id": "\x1b]0;t\x07" + "m" * 20_000}, {"id": "other"}]
    hostile.models = json.dumps({"data": ids}).encode()
    ran = run("section", "src", "-p", "x", model=None)
    assert ran.code == 2
    assert "\x1b" not in ran.stderr and len(ran.stderr) < 2_000


# ---- 2. one bad reply must not kill a worker ----

SHAPES = {
    "message is a string": completion(choices=[{"message": "hi", "finish_reason": "stop"}]),
    "choices is an object": completion(choices={"0": {}}),
    "choices is empty": completion(choices=[]),
    "choice is a list": completion(choices=[[1, 2]]),
    "content is a number": completion(content=12),
    "tool_calls is a string": completion(
        choices=[{"message": {"content": "a", "tool_calls": "x"}, "finish_reason": "stop"}]
    ),
    "body is a list": b"[1, 2, 3]",
    "body is not JSON": b"<html>oops</html>",
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
}


def many_files(root: Path, count: int) -> str:
    """`count` one-line files under root/many (sent one per task, in name order, with -j 1)."""
    folder = root / "many"
    folder.mkdir()
    for i in range(count):
        (folder / f"f{i:02d}.txt").write_text(f"file {i}\n")
    return "many"


def test_each_malformed_reply_fails_one_attempt_and_the_worker_goes_on(
    hostile: HostileServer, run, tmp_path: Path
) -> None:
    shapes = list(SHAPES)  # one task per shape, in order, then one good reply
    hostile.script(*(malformed(SHAPES[s]) for s in shapes), Act(200, completion("fine")))
    folder = many_files(tmp_path, len(shapes) + 1)
    ran = run(
        "section", folder, "--by", "file", "-j", "1", "-p", "x", "--max-retries", "0",
        "--format", "json", entry=True,
    )  # fmt: skip
    assert ran.code == 1, ran.stderr
    assert_clean(ran)
    tasks = json.loads(ran.stdout)["tasks"]
    assert [t["status"] for t in tasks] == ["failed"] * len(shapes) + ["ok"]
    for shape, task in zip(shapes, tasks, strict=False):
        error = task["error"]
        assert "malformed reply" in error and "internal error" not in error, shape
        assert "\n" not in error, shape
    assert "abandoned" not in ran.stderr


def test_a_malformed_reply_is_retried_per_policy(hostile: HostileServer, run) -> None:
    hostile.script(malformed(SHAPES["message is a string"]), Act(200, completion("fine")))
    ran = run("section", "src", "-p", "x", "--max-retries", "2")
    assert ran.code == 0, ran.stderr
    assert ran.stdout.strip().endswith("fine")
    assert len(hostile.chat_requests()) == 2


def test_a_reply_with_only_tool_calls_fails_at_once_when_no_tools_were_offered(
    hostile: HostileServer, run
) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "rm", "arguments": "{}"}}
    body = completion(choices=[{"message": {"content": None, "tool_calls": [call]}}])
    hostile.script(malformed(body))
    ran = run("section", "src", "-p", "x", "--max-retries", "3", "--format", "json")
    assert ran.code == 1
    assert_clean(ran)
    assert json.loads(ran.stdout)["tasks"][0]["error"].startswith(
        "the model asked for tools but none were offered"
    )
    assert len(hostile.chat_requests()) == 1  # not retried


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--timeout", "inf"),
        ("--deadline", "inf"),
        ("--max-cost", "nan"),
        ("--rpm", "inf"),
        ("--temperature", "nan"),
        ("--price-in", "nan"),
    ],
)
def test_non_finite_numbers_are_refused_by_the_cli(
    hostile: HostileServer, run, flag: str, value: str
) -> None:
    ran = run("section", "src", "-p", "x", flag, value)
    assert ran.code == 2, ran.stderr
    assert flag in ran.stderr and "Traceback" not in ran.stderr
    assert hostile.chat_requests() == []


# ---- 3. every wait is bounded ----


def test_a_reply_trickling_a_byte_at_a_time_is_bounded_by_timeout(
    hostile: HostileServer, run
) -> None:
    hostile.script(trickle(0.02))  # ~1,000 bytes: 20 s if nothing bounded the whole request
    ran = run("section", "src", "-p", "x", "--timeout", "1", "--max-retries", "0")
    assert ran.code == 1
    assert "timed out" in ran.stderr
    assert ran.elapsed < 8
    assert_clean(ran)


ABSURD_WAITS = [
    {"Retry-After": "86400"},
    {"Retry-After": "999999999999"},
    {"retry-after-ms": "3600000"},
    {"Retry-After": email.utils.formatdate(time.time() + 3600, usegmt=True)},
    {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "7d"},
]


def test_each_wait_beyond_the_cap_fails_its_call_at_once_quoting_the_server(
    hostile: HostileServer, run, tmp_path: Path
) -> None:
    hostile.script(*(absurd_headers(**headers) for headers in ABSURD_WAITS))
    folder = many_files(tmp_path, len(ABSURD_WAITS))
    ran = run("section", folder, "--by", "file", "-j", "1", "-p", "x", "--format", "json")
    assert ran.code == 1, ran.stderr
    for headers, task in zip(ABSURD_WAITS, json.loads(ran.stdout)["tasks"], strict=True):
        assert "slow down" in task["error"], headers
        assert "more than the 120s cap" in task["error"], headers
    assert len(hostile.chat_requests()) == len(ABSURD_WAITS)  # not one retried
    assert ran.elapsed < 10


def test_a_wait_past_the_deadline_fails_the_call_at_once(hostile: HostileServer, run) -> None:
    hostile.script(absurd_headers(**{"Retry-After": "60"}))
    ran = run("section", "src", "-p", "x", "--deadline", "5s", "--format", "json")
    assert "past the deadline" in json.loads(ran.stdout)["tasks"][0]["error"]
    assert len(hostile.chat_requests()) == 1 and ran.elapsed < 10


@pytest.mark.parametrize("value", ["-5", "soon", "1e999"])
def test_garbage_retry_headers_are_ignored(hostile: HostileServer, run, value: str) -> None:
    garbage = absurd_headers(**{"Retry-After": value, "retry-after-ms": value})
    hostile.script(garbage, Act(200, completion("recovered")))
    ran = run("section", "src", "-p", "x", "--max-retries", "2")
    assert ran.code == 0, ran.stderr
    assert ran.stdout.strip().endswith("recovered") and ran.elapsed < 10


# ---- 8. the smaller ones ----


def test_escape_sequences_from_a_server_never_reach_the_terminal(
    hostile: HostileServer, run
) -> None:
    message = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\rcarriage\x08"
    hostile.script(Act(500, json.dumps({"error": {"message": message}}).encode()))
    ran = run("section", "src", "-p", "x", "--max-retries", "0")
    assert ran.code == 1
    assert "\x1b" not in ran.stderr and "\x07" not in ran.stderr and "\r" not in ran.stderr
    assert "red" in ran.stderr


def test_a_reply_over_the_size_cap_is_one_failed_attempt(hostile: HostileServer, run) -> None:
    hostile.script(Act(200, completion("y" * (9 * 1024 * 1024))), Act(200, completion("small")))
    ran = run("section", "src", "-p", "x", "--max-retries", "1")
    assert ran.code == 0, ran.stderr
    assert "larger than 8 MiB" in ran.stderr and ran.stdout.strip().endswith("small")


def test_a_huge_error_message_is_capped(hostile: HostileServer, run) -> None:
    hostile.script(huge(5))
    ran = run("section", "src", "-p", "x", "--max-retries", "1", "--format", "json")
    assert ran.code == 1
    assert len(ran.stderr) < 4_000
    assert len(json.loads(ran.stdout)["tasks"][0]["error"]) < 1_000


@pytest.mark.parametrize("usage", [{"prompt_tokens": -50, "completion_tokens": "many"}, "lots"])
def test_negative_or_non_numeric_usage_is_ignored_with_a_warning(
    hostile: HostileServer, run, usage: object
) -> None:
    hostile.script(Act(200, completion("ok", usage=usage)))
    prices = ["--price-in", "1", "--price-out", "1"]
    ran = run("section", "src", "-p", "x", *prices, "--format", "json")
    assert ran.code == 0, ran.stderr
    assert "warning:" in ran.stderr and "ignored" in ran.stderr
    doc = json.loads(ran.stdout)
    assert doc["usage"]["prompt_tokens"] >= 0 and doc["usage"]["completion_tokens"] >= 0
    assert "-" not in json.dumps(doc.get("cost", {}))


def test_implausible_usage_is_believed_warned_about_and_stops_at_max_cost(
    hostile: HostileServer, run
) -> None:
    usage = {"prompt_tokens": 10**40, "completion_tokens": 1e308}
    hostile.script(Act(200, completion("ok", usage=usage)))
    ran = run(
        "section", "src", "--by", "file", "-j", "1", "-p", "x", "--price-in", "1",
        "--price-out", "1", "--max-cost", "5", "--format", "json",
    )  # fmt: skip
    assert ran.code == 5, ran.stderr
    assert "tokens for one call" in ran.stderr
    for text in (ran.stdout, ran.stderr):
        assert "inf" not in text.lower().replace("info", "") and "nan" not in text.lower()
    assert len(hostile.chat_requests()) == 1


def start_slow_run(
    hostile: HostileServer, entry_point: str, cwd: Path, *, delay: float
) -> subprocess.Popen[str]:
    """The entry point on `src`, once its one call is in flight (the reply takes `delay` s)."""
    hostile.script(Act(200, completion("late"), delay=delay))
    argv = [entry_point, "section", "src", "-p", "x", "-m", "test-model", "--no-cache"]
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    limit = time.monotonic() + 20
    while not hostile.chat_requests() and time.monotonic() < limit:
        time.sleep(0.01)
    return proc


def test_one_timeout_delivering_sigterm_twice_is_one_interrupt(
    hostile: HostileServer, entry_point: str, make_tree, tmp_path: Path
) -> None:
    make_tree(FILES)
    proc = start_slow_run(hostile, entry_point, tmp_path, delay=1.0)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # what `timeout` does: the process, then its group
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "1 of 1 calls finished" in stderr and "abandoned" not in stderr, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("source", ["stdin", "@file", "argument"])
def test_a_secret_in_a_vote_task_is_redacted_whatever_its_source(
    hostile: HostileServer, run, tmp_path: Path, source: str
) -> None:
    secret = "AKIAIOSFODNN7EXAMPLE"
    task = f"Summarise: the deploy key is {secret}\n"
    (tmp_path / "task.txt").write_text(task)
    arg = {"stdin": "-", "@file": "@task.txt", "argument": task}[source]
    ran = run("vote", arg, "-n", "1", stdin=task if source == "stdin" else None)
    assert ran.code == 0, ran.stderr
    sent = b"".join(r.body for r in hostile.chat_requests()).decode()
    assert secret not in sent and "[REDACTED:" in sent
    assert "secret redacted from TASK: TASK:1:" in ran.stderr
    assert_clean(ran)
    assert secret not in ran.stdout + ran.stderr + _all(tmp_path / "cache")


@pytest.mark.parametrize("terminal", [False, True])
def test_escape_sequences_in_candidates_never_reach_the_terminal(
    hostile: HostileServer, run, monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    if terminal:
        monkeypatch.setenv("FORCE_TERMINAL", "1")  # the Rich vote table and progress bar
    hostile.script(Act(200, completion("\x1b]0;owned\x07\x1b[2Jyes")))
    ran = run("vote", "Is it?", "-n", "3", "--strategy", "consensus")
    assert ran.code == 0, ran.stderr
    assert "\x1b]" not in ran.stderr and "\x07" not in ran.stderr and "\x1b[2J" not in ran.stderr
    assert "yes" in ran.stderr
    assert ran.stdout.endswith("yes\n")  # the result keeps the model's bytes


def test_a_second_interrupt_after_200_ms_still_stops_at_once(
    hostile: HostileServer, entry_point: str, make_tree, tmp_path: Path
) -> None:
    make_tree(FILES)
    proc = start_slow_run(hostile, entry_point, tmp_path, delay=5.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)  # a person pressing Ctrl-C again: stop now
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert time.monotonic() - started < 3  # did not wait for the 5 s reply
    assert "0 of 1 calls finished" in stderr and "Traceback" not in stderr
