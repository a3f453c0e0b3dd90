"""The engine against the loopback server: retries, pacing, quotas, failure policy, budget.

Timing claims are checked on the server's own request log (when a request arrived, when its
reply left), never on the client's wall clock.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from pathlib import Path

import pytest
from llmserver import LLMServer, RecordedRequest

from parallelize import RunOptions, find_recipe, run_section
from parallelize.errors import BudgetError, ConfigError, FatalLLMError
from parallelize.recipe.load import override


def recipe(**values: object):
    return override(find_recipe("summarize"), {"model": "test-model", **values})


def files(make_tree, n: int) -> str:
    return str(make_tree({f"f{i:03d}.txt": f"MARKER-{i}\n" for i in range(n)}))


def by_file(**values: object):
    return recipe(chunking={"by": "file"}, **values)


def starts(requests: list[RecordedRequest]) -> list[float]:
    return sorted(r.start for r in requests)


def rate(times: list[float]) -> float:
    """Requests a second from the median gap: one stall of a busy machine does not move it."""
    return 1 / statistics.median(b - a for a, b in itertools.pairwise(times))


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "0.6"}, 0.6),
        ({"retry-after-ms": "400"}, 0.4),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "500ms"}, 0.5),
    ],
)
def test_a_429_waits_as_long_as_the_server_asks(
    llm: LLMServer, make_tree, headers: dict[str, str], wait: float
) -> None:
    llm.script("MARKER-0", status=429, headers=headers, times=1)
    result = run_section([files(make_tree, 1)], by_file())
    refused, answered = llm.requests
    assert (refused.status, answered.status) == (429, 200)
    assert answered.start - refused.end >= wait  # the gap the server saw
    assert result.exit_code == 0 and result.details["engine"]["throttled"] == 1


@pytest.mark.parametrize("status", [400, 401])
def test_no_retry_on_client_errors(llm: LLMServer, make_tree, status: int) -> None:
    llm.script("MARKER-0", status=status)
    if status == 401:
        with pytest.raises(FatalLLMError):
            run_section([files(make_tree, 1)], by_file())
    else:
        result = run_section([files(make_tree, 1)], by_file())
        assert result.exit_code == 1 and result.results[0].status == "failed"
    assert len(llm.requests) == 1


def test_server_errors_and_drops_are_retried(llm: LLMServer, make_tree) -> None:
    llm.script("MARKER-0", status=503, times=2)
    llm.script("MARKER-1", drop=True, times=1)
    result = run_section([files(make_tree, 2)], by_file(), options=RunOptions(max_retries=2))
    assert [r.status for r in result.results] == ["ok", "ok"]
    assert (llm.count("MARKER-0"), llm.count("MARKER-1")) == (3, 2)


def test_an_exhausted_quota_is_not_waited_for(llm: LLMServer, make_tree) -> None:
    llm.script(
        "MARKER-0",
        status=429,
        error={"message": "You exceeded your current quota", "code": "insufficient_quota"},
    )
    with pytest.raises(FatalLLMError, match="quota") as err:
        run_section([files(make_tree, 3)], by_file(concurrency=1))
    assert err.value.exit_code == 2 and len(llm.requests) == 1


def test_rpm_is_never_exceeded_and_mostly_used(llm: LLMServer, make_tree) -> None:
    """The server enforces the same quota; its bucket of 8 absorbs up to 0.2 s of arrival jitter
    (the first request of a run pays for a new connection, the later ones do not)."""
    rpm = 1200.0  # 20 requests a second
    llm.rpm, llm.burst = rpm, 8
    run_section([files(make_tree, 30)], by_file(concurrency=8), options=RunOptions(rpm=rpm))
    assert [r.status for r in llm.requests].count(429) == 0  # never over the quota
    assert rate(starts(llm.requests)) >= 0.85 * rpm / 60  # and mostly used


def test_tpm_paces_by_tokens(llm: LLMServer, make_tree) -> None:
    options = RunOptions(tpm=60 * 400)  # 400 tokens a second; each call books ~60 + max_tokens
    run_section([files(make_tree, 6)], by_file(concurrency=6, max_tokens=20), options=options)
    seen = starts(llm.requests)
    assert seen[-1] - seen[0] >= 0.5  # ~80 tokens x 5 gaps / 400 per second, not one burst


def test_gentle_start_then_the_full_concurrency(llm: LLMServer, make_tree) -> None:
    llm.latency = 1.0  # long enough for all 32 to be sent even on a starved machine
    run_section([files(make_tree, 32)], by_file(concurrency=32))
    seen = starts(llm.requests)
    # The cap is reached; that the window opens gently is test_pacing's (a fake clock: the
    # ramp is 0.015 s to 32, below what a wall-clock assert can tell from a burst).
    assert llm.peak_concurrency == 32 and len(seen) == 32


def test_pacing_converges_on_a_throttled_server(llm: LLMServer, make_tree) -> None:
    """No --rpm: the run learns the server's rate from its headers instead of hammering it.

    At most the opening volley is refused (the benchmark's W2 checks the share at scale).
    """
    llm.rpm, llm.burst, llm.latency = 1200, 4, 0.02  # 20 a second after 4 of credit
    result = run_section([files(make_tree, 40)], by_file(concurrency=16))
    assert result.exit_code == 0
    refused = [r for r in llm.requests if r.status == 429]
    assert len(refused) < 16  # at most one opening volley, not a storm
    accepted = starts([r for r in llm.requests if r.status == 200])
    assert rate(accepted[4:]) >= 0.85 * 20  # after the credit: the server's rate, mostly used


def test_pacing_backs_off_on_429s_and_recovers_when_they_stop(llm: LLMServer, make_tree) -> None:
    """A server that refuses requests closer than 1/20 s apart (no quota headers) for a while."""
    lock, state = threading.Lock(), {"last": 0.0, "accepted": 0}

    def too_soon(body: object) -> bool:
        with lock:
            now = time.monotonic()
            if state["accepted"] >= 10 or now - state["last"] >= 1 / 20:
                state["last"], state["accepted"] = now, state["accepted"] + 1
                return False
            return True

    llm.latency = 0.01
    llm.script(too_soon, status=429, headers={"retry-after-ms": "25"})
    result = run_section([files(make_tree, 80)], by_file(concurrency=8))
    assert result.exit_code == 0
    log = sorted(llm.requests, key=lambda r: r.start)
    refused = [r for r in log if r.status == 429]
    assert len(refused) <= 20  # backed off: not a storm while 10 went through at 20/s
    assert log[-1] not in refused
    # Recovered past the old limit: the rate doubles each second without a 429, so by the end of
    # the 70 calls after the last one it is well above 20 a second (or pacing has ended). Read
    # from the pacer, not the clock: a starved machine stretches the run but not this conclusion.
    paced = result.details["engine"]["paced_rpm"]
    assert paced is None or paced >= 2 * 20 * 60


def test_max_failures_stops_new_work(llm: LLMServer, make_tree) -> None:
    llm.script("MARKER", status=500)
    options = RunOptions(max_retries=0, max_failures=2)
    result = run_section([files(make_tree, 8)], by_file(concurrency=1), options=options)
    assert len(llm.requests) == 2 and result.exit_code == 1
    assert [r.status for r in result.results].count("skipped") == 6
    assert any("--max-failures" in w for w in result.warnings)


def test_deadline_keeps_what_finished_and_exits_5(llm: LLMServer, make_tree) -> None:
    llm.latency = 0.3
    options = RunOptions(deadline=0.4)
    result = run_section([files(make_tree, 12)], by_file(concurrency=2), options=options)
    done = [r for r in result.results if r.succeeded]
    assert result.exit_code == 5 and 2 <= len(done) < 12
    assert len(llm.requests) == len(done)  # what started finished; nothing started after
    assert all(f"MARKER-{r.task.index}" in result.output for r in done)
    assert result.results[-1].error.startswith("not started: the deadline")


def test_budget_refused_before_the_first_request(llm: LLMServer, make_tree) -> None:
    options = RunOptions(max_cost=0.01, price_in=1000.0, price_out=1000.0)
    with pytest.raises(BudgetError, match="exceeds the budget") as err:
        run_section([files(make_tree, 3)], by_file(max_tokens=50), options=options)
    assert err.value.exit_code == 5 and llm.requests == []


def test_budget_needs_a_price(llm: LLMServer, make_tree) -> None:
    with pytest.raises(ConfigError, match="--price-in") as err:
        run_section([files(make_tree, 1)], by_file(), options=RunOptions(max_cost=1.0))
    assert err.value.exit_code == 2 and llm.requests == []


def test_budget_reached_mid_run_keeps_the_work(llm: LLMServer, make_tree) -> None:
    """Each call reserves $10 (10 output tokens at $1); the merge call no longer fits."""
    options = RunOptions(max_cost=35.0, price_in=0.0, price_out=1_000_000.0)
    merge = {"strategy": "llm", "max_tokens": 200}  # reserves $200: it cannot start
    job = recipe(chunking={"chunks": 3}, max_tokens=10, merge=merge)
    result = run_section([files(make_tree, 3)], job, options=options)
    assert len(llm.requests) == 3 and result.exit_code == 5
    assert result.output.count("## chunk") == 3  # the outputs are joined instead
    assert result.details["cost"]["usd"] <= 35.0


def test_dry_run_estimates_the_cost(llm: LLMServer, make_tree, tmp_path: Path) -> None:
    options = RunOptions(dry_run=True, max_cost=0.000001, price_in=1.0, price_out=1.0)
    result = run_section([files(make_tree, 2)], by_file(max_tokens=100), options=options)
    planned = result.details["estimate"]
    assert planned["calls"] == 2 and planned["output_tokens"] == 200 and planned["cost"] > 0
    assert result.exit_code == 5 and llm.requests == []
