"""Retries against the loopback server: a quick first retry, backoff after it, the retry budget.

Waits are read from what the executor computed (its retry events) and counts from the server's
request log, never from the wall clock.
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from collections.abc import Callable

from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize import RunOptions, find_recipe, run_section
from parallelize.cli import app
from parallelize.engine.retry import FIRST_RETRY_JITTER, RetryPolicy
from parallelize.engine.retrybudget import MIN_ROOM, TOKEN_RATIO, RetryBudget
from parallelize.recipe.load import override
from parallelize.recipe.model import Recipe
from parallelize.records import Event, RunResult

_WAIT = re.compile(r"retrying in (\d+(?:\.\d+)?)(ms|s)$")


def by_file(concurrency: int = 4) -> Recipe:
    recipe = find_recipe("summarize")
    return override(
        recipe, {"model": "test-model", "chunking": {"by": "file"}, "concurrency": concurrency}
    )


def files(make_tree, n: int) -> str:
    return str(make_tree({f"f{i:03d}.txt": f"MARKER-{i:03d}\n" for i in range(n)}))


class Waits:
    """The waits the executor announced before each retry, per task index, in order."""

    def __init__(self) -> None:
        self.by_task: dict[int, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        found = _WAIT.search(event.message) if event.kind == "retry" else None
        if found:
            seconds = float(found[1]) / (1000 if found[2] == "ms" else 1)
            with self._lock:
                self.by_task[event.task.index].append(seconds)


def every_other_fails() -> Callable[[object], bool]:
    """A rule's match that fails every second request: a steady 50% storm, whatever the order."""
    lock, seen = threading.Lock(), [0]

    def match(body: object) -> bool:
        with lock:
            seen[0] += 1
            return seen[0] % 2 == 0

    return match


def budget_refusals(result: RunResult) -> list[str]:
    return [r.error for r in result.results if r.error and "retry budget exhausted" in r.error]


def test_the_first_retry_is_quick_and_later_ones_back_off() -> None:
    policy = RetryPolicy()
    draws = {n: [policy.delay(n) for _ in range(300)] for n in (1, 2, 3)}
    assert max(draws[1]) <= FIRST_RETRY_JITTER
    assert 0.25 < max(draws[2]) <= 0.5  # then the old ladder: full jitter, 0.5 s doubling
    assert 0.5 < max(draws[3]) <= 1.0
    assert max(policy.delay(1, throttled=True) for _ in range(300)) > FIRST_RETRY_JITTER
    assert policy.delay(1, 0.7) == 0.7  # the server's wait wins


def test_the_budget_is_grpc_retry_throttling() -> None:
    budget = RetryBudget.for_concurrency(4)
    assert budget.max_tokens == 2 * (MIN_ROOM + 1)
    for _ in range(MIN_ROOM):  # the room: this many failures in a row are all retried
        budget.failed()
        assert budget.allow()
    budget.failed()
    assert not budget.allow() and budget.refused == 1 and budget.outage
    for _ in range(round(1 / TOKEN_RATIO)):  # four answers refill one failure
        budget.succeeded()
    assert budget.allow() and not budget.outage
    assert RetryBudget.for_concurrency(64).max_tokens == 2 * 65  # a volley of 64 fits


def test_a_5xx_or_a_reset_is_retried_at_once_a_second_failure_backs_off(
    llm: LLMServer, make_tree
) -> None:
    for i in range(4):
        llm.script(f"MARKER-{i:03d}", status=503, times=2)  # fails twice
    for i in range(4, 8):
        llm.script(f"MARKER-{i:03d}", drop=True, times=1)  # a dropped connection, once
    waits = Waits()
    result = run_section([files(make_tree, 8)], by_file(8), options=RunOptions(on_event=waits))
    assert result.exit_code == 0
    assert [llm.count(f"MARKER-{i:03d}") for i in range(8)] == [3] * 4 + [2] * 4
    assert all(len(waits.by_task[i]) == (2 if i < 4 else 1) for i in range(8))
    assert max(w[0] for w in waits.by_task.values()) <= FIRST_RETRY_JITTER
    second = [waits.by_task[i][1] for i in range(4)]
    assert FIRST_RETRY_JITTER < max(second) <= 0.5  # the ladder's first rung
    assert result.details["engine"]["retries"] == 12 and len(llm.requests) == 20


def test_a_50_percent_storm_is_bounded_and_the_refused_calls_say_so(
    llm: LLMServer, make_tree
) -> None:
    llm.script(every_other_fails(), status=503)
    calls = 120
    result = run_section([files(make_tree, calls)], by_file(4))
    room = MIN_ROOM + 1
    # gRPC's bound: retries < max_tokens / 2 + TOKEN_RATIO x successes, whatever the order.
    assert len(llm.requests) <= calls * (1 + TOKEN_RATIO) + room  # 171; without a budget ~240
    refused = budget_refusals(result)
    engine = result.details["engine"]
    assert refused and engine["retry_budget_refused"] == len(refused)
    assert all("re-run the same command to resume" in error for error in refused)
    assert engine["stopped"] is None  # flaky, not down: the run went on
    assert result.exit_code == 1
    assert any(f"{len(refused)} call(s) failed without a retry" in w for w in result.warnings)


def test_a_rerun_after_a_storm_resumes_from_the_cache(llm: LLMServer, make_tree) -> None:
    llm.script(every_other_fails(), status=503)
    calls = 80
    args = ["section", files(make_tree, calls), "--by", "file", "-j", "4", "-m", "test-model"]
    args += ["-p", "Summarize", "--format", "json", "-q"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1
    stormy = json.loads(first.stdout)
    failed = [r for r in stormy["tasks"] if r["status"] == "failed"]
    assert failed and stormy["engine"]["retry_budget_refused"] == len(failed)
    assert all("retry budget exhausted" in r["error"] for r in failed)
    assert any("re-run the same command to resume" in w for w in stormy["warnings"])
    llm.reset()  # the storm is over
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.stderr
    engine = json.loads(again.stdout)["engine"]
    assert llm.count() == len(failed)  # only the failed calls are sent again
    assert engine["cached"] == calls - len(failed)
    assert (engine["retries"], engine["retry_budget_refused"]) == (0, 0)


def test_an_outage_stops_the_run_instead_of_trying_every_call(llm: LLMServer, make_tree) -> None:
    llm.script(None, status=503)
    options = RunOptions(max_retries=1)
    result = run_section([files(make_tree, 60)], by_file(4), options=options)
    assert result.details["engine"]["stopped"] == "retry_budget" and result.exit_code == 1
    # The room, then a few more: a call's last allowed attempt does not ask the budget, and the
    # calls in flight finish. Without the budget: 60 calls x 2 attempts.
    assert len(llm.requests) < 2 * (MIN_ROOM + 1)
    assert [r.status for r in result.results].count("skipped") >= 30
    assert any("attempts all failed (is the server down?)" in w for w in result.warnings)


def test_twelve_percent_failures_are_never_throttled(llm: LLMServer, make_tree) -> None:
    llm.error_rate, llm.drop_rate, llm.seed = 0.1, 0.02, 14
    calls = 200
    result = run_section([files(make_tree, calls)], by_file(16))
    engine = result.details["engine"]
    assert result.exit_code == 0 and all(r.succeeded for r in result.results)
    assert engine["retry_budget_refused"] == 0
    assert engine["retries"] == len(llm.requests) - calls > 0


def test_429s_do_not_drain_the_budget(llm: LLMServer, make_tree) -> None:
    """Each call is refused with a 429 three times (36, more than the room): the pacer's job."""
    quota = {"x-ratelimit-limit-requests": "60000", "x-ratelimit-remaining-requests": "0"}
    for i in range(12):
        llm.script(f"MARKER-{i:03d}", status=429, headers={"retry-after-ms": "1", **quota}, times=3)
    result = run_section([files(make_tree, 12)], by_file(4))
    engine = result.details["engine"]
    assert result.exit_code == 0 and engine["throttled"] == 36 > MIN_ROOM
    assert engine["retry_budget_refused"] == 0 and len(llm.requests) == 48
