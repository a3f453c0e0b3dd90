"""--batch end to end against the loopback Batch API fake: submit, poll, collect, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from batchserver import BatchServer
from typer.testing import CliRunner

from parallelize.cli.app import app

FILES = {f"f{i}.txt": f"text of file {i}\n" for i in range(6)}


@pytest.fixture(scope="module")
def _fake() -> Iterator[BatchServer]:
    with BatchServer() as server:
        yield server


@pytest.fixture
def fake(_fake: BatchServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchServer]:
    _fake.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", _fake.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-loopback-key-0000")
    monkeypatch.setenv("PARALLELIZE_BATCH_POLL", "0.01")
    yield _fake
    _fake.reset()


@pytest.fixture
def tree(make_tree) -> Path:
    return make_tree(FILES, name="proj")


def section(tree: Path, *extra: str) -> list[str]:
    return ["section", str(tree), "--by", "file", "-m", "test-model", "-p", "Summarize.", *extra]


def invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def test_batch_output_equals_online_and_rerun_submits_nothing(
    fake: BatchServer, tree: Path, tmp_path: Path
) -> None:
    online = invoke([*section(tree), "--no-cache"])
    assert online.exit_code == 0, online.stderr
    fake.clear()
    batch = invoke(section(tree, "--batch"))
    assert batch.exit_code == 0, batch.stderr
    assert batch.stdout == online.stdout
    assert fake.count() == 0  # no online chat request
    assert sorted(fake.submitted_lines()) == sorted(set(fake.submitted_lines()))
    assert len(fake.submitted_lines()) == len(FILES)
    again = invoke(section(tree, "--batch"))
    assert again.exit_code == 0 and again.stdout == online.stdout
    assert len(fake.submitted_lines()) == len(FILES)  # all from the cache


def run_entry(
    entry_point: str, args: list[str], fake: BatchServer, **env: str
) -> subprocess.Popen[str]:
    environ = {**os.environ, **env}
    return subprocess.Popen(
        [entry_point, *args], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def online_stdout(fake: BatchServer, tree: Path) -> str:
    run = invoke([*section(tree), "--no-cache"])
    assert run.exit_code == 0, run.stderr
    fake.clear()
    return run.stdout


def test_detach_exits_6_with_the_ids_then_a_rerun_finishes(fake: BatchServer, tree: Path) -> None:
    expected = online_stdout(fake, tree)
    first = invoke(section(tree, "--batch", "--detach"))
    assert first.exit_code == 6, first.stderr
    assert "batch_1" in first.stderr and "error:" not in first.stderr
    assert first.stdout == ""
    second = invoke(section(tree, "--batch", "--detach"))  # polls once: finalizing
    assert second.exit_code == 6
    third = invoke(section(tree, "--batch"))
    assert third.exit_code == 0, third.stderr
    assert third.stdout == expected
    assert len(fake.submitted_lines()) == len(FILES)


def test_expired_and_cancelled_lines_are_resubmitted_and_the_rest_kept(
    fake: BatchServer, tree: Path
) -> None:
    expected = online_stdout(fake, tree)
    fake.outcomes = ["expired", "cancelled"]
    run = invoke(section(tree, "--batch", "--batch-retries", "2"))
    assert run.exit_code == 0, run.stderr
    assert run.stdout == expected
    lines = fake.submitted_lines()
    assert len(lines) == len(FILES) + 3 + 2  # 3 of 6 expired, then 2 of those 3 cancelled
    assert "expired" in run.stderr


def test_out_of_retries_a_line_fails_and_finish_online_makes_it(
    fake: BatchServer, tree: Path
) -> None:
    expected = online_stdout(fake, tree)
    fake.outcomes = ["expired"]
    failed = invoke(section(tree, "--batch", "--batch-retries", "0"))
    assert failed.exit_code == 1
    assert "batch_expired" in failed.stderr
    fake.outcomes = ["expired"]  # the re-run's one more try expires in full
    fake.partial = 0.0
    done = invoke(section(tree, "--batch", "--batch-retries", "0", "--finish-online"))
    assert done.exit_code == 0, done.stderr
    assert done.stdout == expected
    assert fake.count() == 3  # the expired half, submitted once more, then went online


def test_a_rerun_submits_the_failed_lines_once_more(fake: BatchServer, tree: Path) -> None:
    expected = online_stdout(fake, tree)
    fake.outcomes = ["expired"]
    failed = invoke(section(tree, "--batch", "--batch-retries", "0"))
    assert failed.exit_code == 1 and "a re-run submits it once more" in failed.stderr
    again = invoke(section(tree, "--batch", "--batch-retries", "0"))
    assert again.exit_code == 0, again.stderr
    assert again.stdout == expected
    assert len(fake.submitted_lines()) == len(FILES) + len(FILES) // 2


def test_a_vanished_batch_is_resubmitted_once_with_a_warning(fake: BatchServer, tree: Path) -> None:
    expected = online_stdout(fake, tree)
    fake.outcomes = ["vanish"]
    run = invoke(section(tree, "--batch", "--batch-retries", "0"))
    assert run.exit_code == 0, run.stderr
    assert "vanished" in run.stderr and run.stdout == expected
    assert len(fake.submitted_lines()) == 2 * len(FILES)


def test_an_error_file_fails_its_lines_and_keeps_the_others(fake: BatchServer, tree: Path) -> None:
    fake.script("file 3", status=400, error={"message": "bad request for this one"})
    run = invoke(section(tree, "--batch", "--format", "json"))
    assert run.exit_code == 1
    doc = json.loads(run.stdout)
    failed = [t for t in doc["tasks"] if t["error"]]
    assert len(failed) == 1 and "bad request for this one" in failed[0]["error"]
    assert len(fake.submitted_lines()) == len(FILES)  # a 400 is not resubmitted
    assert "batch_saved_usd" not in doc["cost"]  # no price for test-model: no saving claimed


def test_batch_calls_cost_the_batch_rates(fake: BatchServer, tree: Path) -> None:
    fake.models = ["gpt-4o-mini"]
    args = [*section(tree)[:4], "-m", "gpt-4o-mini", "-p", "Summarize.", "--format", "json"]
    online = json.loads(invoke([*args, "--no-cache"]).stdout)
    batch = json.loads(invoke([*args, "--batch"]).stdout)
    assert "batch_saved_usd" not in online["cost"]
    assert batch["cost"]["usd"] == pytest.approx(online["cost"]["usd"] / 2, rel=0.01)
    assert batch["cost"]["batch_saved_usd"] == pytest.approx(batch["cost"]["usd"], rel=0.01)
    plan = json.loads(invoke([*args, "--dry-run"]).stdout)["estimate"]["cost"]
    batch_plan = json.loads(invoke([*args, "--dry-run", "--batch"]).stdout)["estimate"]["cost"]
    assert batch_plan == pytest.approx(plan / 2, rel=0.01)


def test_finish_online_calls_cost_the_online_rates(fake: BatchServer, tree: Path) -> None:
    fake.models = ["gpt-4o-mini"]
    args = [*section(tree)[:4], "-m", "gpt-4o-mini", "-p", "Summarize.", "--format", "json"]
    online = json.loads(invoke([*args, "--no-cache"]).stdout)
    fake.clear()
    fake.outcomes = ["expired"]  # half the lines expire, then go online
    mixed = invoke([*args, "--batch", "--batch-retries", "0", "--finish-online"])
    assert mixed.exit_code == 0, mixed.stderr
    doc = json.loads(mixed.stdout)
    assert fake.count() == len(FILES) // 2
    full = online["cost"]["usd"]
    assert doc["cost"]["usd"] == pytest.approx(full * 0.75, rel=0.02)  # half at half price
    assert doc["cost"]["batch_saved_usd"] == pytest.approx(full * 0.25, rel=0.02)


def test_validation_failure_is_exit_2_with_the_servers_reasons(
    fake: BatchServer, tree: Path
) -> None:
    fake.outcomes = ["failed"]
    run = invoke(section(tree, "--batch"))
    assert run.exit_code == 2
    assert "failed validation" in run.stderr and "line 1" in run.stderr


def test_token_limit_is_a_clear_message_and_nothing_is_lost(fake: BatchServer, tree: Path) -> None:
    expected = online_stdout(fake, tree)
    fake.outcomes = ["token_limit"]
    run = invoke(section(tree, "--batch"))
    assert run.exit_code == 1 and "Enqueued token limit" in run.stderr
    again = invoke(section(tree, "--batch"))
    assert again.exit_code == 0 and again.stdout == expected


def test_companion_flags_need_batch(fake: BatchServer, tree: Path) -> None:
    run = invoke(section(tree, "--detach"))
    assert run.exit_code == 2 and "--detach needs --batch" in run.stderr
    run = invoke(section(tree, "--batch", "--no-cache"))
    assert run.exit_code == 2
    assert fake.count_path("POST", "files") == 0


def test_transient_api_failures_are_retried(fake: BatchServer, tree: Path) -> None:
    expected = online_stdout(fake, tree)
    fake.api_faults = [
        ("POST", r"/files$", 503, "0"),
        ("POST", r"/batches$", 429, "0"),
        ("GET", r"/batches/batch_", 502, None),
        ("GET", r"/batches/batch_", 0, None),  # a reset connection
        ("GET", r"/files/.*/content", 500, "0"),
    ]
    run = invoke(section(tree, "--batch"))
    assert run.exit_code == 0, run.stderr
    assert run.stdout == expected
    assert fake.api_faults == []  # every fault was met, and each retried
    assert len(fake.batches) == 1 and len(fake.submitted_lines()) == len(FILES)


def test_a_lasting_api_failure_says_a_rerun_resumes(fake: BatchServer, tree: Path) -> None:
    expected = online_stdout(fake, tree)
    fake.api_faults = [("GET", r"/batches/batch_", 503, "0")] * 10
    run = invoke(section(tree, "--batch"))
    assert run.exit_code != 0
    assert "gave up after 10 tries" in run.stderr and "a re-run resumes" in run.stderr
    again = invoke(section(tree, "--batch"))
    assert again.exit_code == 0 and again.stdout == expected
    assert len(fake.submitted_lines()) == len(FILES)


def test_tools_from_the_flag_are_refused_before_any_request(fake: BatchServer, tree: Path) -> None:
    run = invoke(section(tree, "--batch", "--tools", "fs"))
    assert run.exit_code == 2, run.stderr
    assert "--batch cannot be combined with tools" in run.stderr
    assert fake.count() == 0 and fake.count_path("POST", "files") == 0


def test_a_crash_right_after_create_is_adopted_not_resubmitted(
    fake: BatchServer, tree: Path, entry_point: str
) -> None:
    expected = online_stdout(fake, tree)
    fake.hold_creates = True  # the batch exists on the server; its id never reaches the client
    crashed = run_entry(entry_point, section(tree, "--batch"), fake)
    for _ in range(1500):
        if fake.batches:
            break
        time.sleep(0.02)
    crashed.kill()
    crashed.communicate(timeout=30)
    fake.hold_creates = False
    fake.creates_released.set()
    assert crashed.returncode != 0 and len(fake.batches) == 1
    resumed = run_entry(entry_point, section(tree, "--batch"), fake)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert "adopted" in err and out == expected
    assert len(fake.submitted_lines()) == len(FILES)


def test_killed_mid_poll_resumes_without_a_second_submission(
    fake: BatchServer, tree: Path, entry_point: str
) -> None:
    expected = online_stdout(fake, tree)
    fake.paused = True
    first = run_entry(entry_point, section(tree, "--batch"), fake)
    for _ in range(600):
        if fake.count_path("GET", r"batches/batch_1$") >= 3:
            break
        time.sleep(0.02)
    first.kill()
    first.communicate(timeout=30)
    fake.paused = False
    resumed = run_entry(entry_point, section(tree, "--batch"), fake)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert out == expected
    assert len(fake.submitted_lines()) == len(FILES)


def test_vote_with_a_judge_is_two_batches_and_prints_what_online_does(fake: BatchServer) -> None:
    def scripted() -> None:
        fake.script("impartial judge", '{"winner": "B", "reason": "greenest"}')
        fake.script(None, lambda body: f"colour number {body.get('seed')}")

    args = ["vote", "Name a colour.", "-m", "test-model", "-n", "3", "--seed", "4"]
    scripted()
    online = invoke([*args, "--no-cache"])
    assert online.exit_code == 0, online.stderr
    fake.reset()
    fake.models = ["test-model"]
    scripted()
    batch = invoke([*args, "--batch"])
    assert batch.exit_code == 0, batch.stderr
    assert batch.stdout == online.stdout
    assert len(fake.batches) == 2 and fake.count() == 0
    assert len(fake.submitted_lines()) == 4  # three candidates, then the judge


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--early-stop", "--strategy", "consensus"], "early stopping"),
        (["--pick"], "--pick and --batch"),
    ],
)
def test_what_a_batch_cannot_do_yet_is_exit_2_before_any_request(
    fake: BatchServer, extra: list[str], says: str
) -> None:
    run = invoke(["vote", "Name a colour.", "-m", "test-model", "-n", "3", "--batch", *extra])
    assert run.exit_code == 2, run.stderr
    assert says in run.stderr
    assert fake.count_path("POST", "") == 0


def test_azure_files_and_batches_drop_the_deployment_and_keep_the_api_version(
    fake: BatchServer, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{fake.url}/openai/deployments/test-model")
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    run = invoke(section(tree, "--batch"))
    assert run.exit_code == 0, run.stderr
    batch_calls = [r for r in fake.all_requests if "/files" in r.path or "/batches" in r.path]
    assert batch_calls and all(r.path.startswith("/openai/") for r in batch_calls)
    assert "deployments" not in "".join(r.path for r in batch_calls)
    assert all("api-version=2024-10-21" in r.query for r in batch_calls)


def test_refresh_submits_again_even_without_retries(fake: BatchServer, tree: Path) -> None:
    first = invoke(section(tree, "--batch"))
    assert first.exit_code == 0, first.stderr
    again = invoke(section(tree, "--batch", "--refresh", "--batch-retries", "0"))
    assert again.exit_code == 0, again.stderr
    assert again.stdout == first.stdout
    assert len(fake.submitted_lines()) == 2 * len(FILES)


def test_an_llm_merge_runs_its_levels_as_batches_and_prints_what_online_does(
    fake: BatchServer, tree: Path
) -> None:
    args = section(tree, "--merge", "llm")
    online = invoke([*args, "--no-cache"])
    assert online.exit_code == 0, online.stderr
    fake.clear()
    batch = invoke([*args, "--batch"])
    assert batch.exit_code == 0, batch.stderr
    assert batch.stdout == online.stdout
    assert len(fake.batches) >= 2 and fake.count() == 0


def test_a_line_too_long_is_split_and_healed_as_online(
    fake: BatchServer, make_tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = make_tree({"big.txt": "word " * 1200, "small.txt": "tiny\n"}, name="big")
    fake.context_window = 700
    args = ["section", str(big), "--by", "file", "-m", "test-model", "-p", "Summarize."]
    online = invoke([*args, "--no-cache", "--context-window", "100000"])
    fake.clear()
    batch = invoke([*args, "--batch", "--context-window", "100000"])
    assert batch.exit_code == online.exit_code, batch.stderr
    assert batch.stdout == online.stdout
    assert fake.count() == 0 and len(fake.batches) >= 2  # the split parts went in a second batch


def test_ctrl_c_while_waiting_says_the_batches_keep_running(
    fake: BatchServer, tree: Path, entry_point: str
) -> None:
    fake.paused = True
    run = run_entry(entry_point, section(tree, "--batch"), fake)
    for _ in range(600):
        if fake.count_path("GET", r"batches/batch_1$") >= 2:
            break
        time.sleep(0.02)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 130
    assert "batch_1 keep running at the provider" in err
