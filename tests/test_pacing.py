"""The pacer's decisions on a fake clock, and the duration syntax of flags and headers."""

from __future__ import annotations

import pytest

from parallelize.engine.durations import format_duration, parse_duration
from parallelize.engine.pacing import DECREASE, INITIAL_WINDOW, MIN_RATE, SAFETY, Pacer


class Clock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def quota(limit: int, remaining: int) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
    }


def test_rpm_slots_are_evenly_spaced() -> None:
    clock = Clock()
    pacer = Pacer(concurrency=8, rpm=600, clock=clock)  # one slot every 0.1 s
    first = pacer.acquire()
    assert first is not None and first.start == 100.0
    pacer.release(first, status=200)
    clock.now = 100.06  # within BOOK_AHEAD of the next slot: it is booked for 100.1
    second = pacer.acquire()
    assert second is not None and second.start == pytest.approx(100.1)


def test_gentle_start_window() -> None:
    clock = Clock()
    pacer = Pacer(concurrency=64, clock=clock)
    permits = [pacer.acquire() for _ in range(INITIAL_WINDOW)]
    assert all(permits) and pacer._blocked_for(clock.now) > 0  # the fifth must wait ...
    clock.now += 0.2
    assert pacer._blocked_for(clock.now) == 0  # ... until the window has grown


def test_quota_headers_set_the_rate_only_when_the_quota_runs_low() -> None:
    clock = Clock()
    pacer = Pacer(concurrency=16, clock=clock)
    permit = pacer.acquire()
    pacer.release(permit, status=200, headers=quota(6000, 5000))
    assert pacer.rate() is None  # ample: no pacing
    pacer.release(pacer.acquire(), status=200, headers=quota(600, 3))
    assert pacer.rate() == pytest.approx(10 * SAFETY)


def test_one_cut_per_volley_and_retry_after_pauses_everyone() -> None:
    clock = Clock()
    pacer = Pacer(concurrency=8, clock=clock)
    volley = [pacer.acquire() for _ in range(4)]
    clock.now += 0.5
    for permit in volley:
        pacer.release(permit, status=429, retry_after=1.0)
    assert pacer.cuts == 1 and pacer.throttled == 4
    cut = pacer.rate()
    assert cut == pytest.approx(4 / 0.5 * DECREASE)  # half the rate measured before the 429s
    assert pacer._blocked_for(clock.now) == pytest.approx(1.0)  # Retry-After holds everyone


def test_rate_recovers_and_pacing_ends_after_429s_stop() -> None:
    clock = Clock()
    pacer = Pacer(concurrency=4, clock=clock)
    permit = pacer.acquire()
    clock.now += 0.1
    pacer.release(permit, status=429)
    assert pacer.rate() is not None
    rates = []
    while pacer.rate() is not None and len(rates) < 500:
        clock.now += 1.0  # past the next slot, so acquire() never waits on this fake clock
        permit = pacer.acquire()
        clock.now += 0.01
        pacer.release(permit, status=200)
        rates.append(pacer.rate())
    assert rates == sorted(rates, key=lambda r: r or float("inf")) and rates[-1] is None


def test_closing_refuses_permits() -> None:
    pacer = Pacer(concurrency=2)
    pacer.close()
    assert pacer.acquire() is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("1.5s", 1.5), ("120ms", 0.12), ("6m0s", 360), ("1h30m", 5400), ("7d", 604800)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "10x", "-5", "1m30"])
def test_bad_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.25, 12, 200, 7500, 90000)] == [
        "250ms",
        "12s",
        "3m20s",
        "2h5m",
        "1d1h",
    ]


@pytest.mark.parametrize("limit", ["1e-300", "0.0001"])
def test_no_header_can_pace_slower_than_min_rate(limit: str) -> None:
    clock = Clock()
    pacer = Pacer(concurrency=4, clock=clock)
    absurd = {"x-ratelimit-limit-requests": limit, "x-ratelimit-remaining-requests": "0"}
    for status in (200, 429):  # a success that announces the quota, then a throttle
        pacer.release(pacer.acquire(), status=status, headers=absurd)
        assert pacer.rate() is not None and pacer.rate() >= MIN_RATE
    clock.now += 1 / MIN_RATE
    assert pacer._blocked_for(clock.now) <= 1 / MIN_RATE


def test_usage_a_call_cannot_have_used_does_not_stall_the_token_pacer() -> None:
    clock = Clock()
    pacer = Pacer(concurrency=4, tpm=60_000, clock=clock)  # 1,000 tokens a second
    permit = pacer.acquire(500)
    assert permit is not None
    pacer.release(permit, status=200, tokens_used=10**15)  # a server claiming a quadrillion
    clock.now += 2.0  # a call of 500 tokens is charged at most twice that: 1 s of quota
    assert pacer._blocked_for(clock.now) == 0
