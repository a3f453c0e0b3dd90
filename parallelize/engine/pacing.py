"""When the next request may start: a known quota (--rpm/--tpm), or a rate learned from replies.

Every attempt asks the one shared Pacer for a permit and reports back how it went.

- A known quota is enforced by virtual scheduling (GCRA): each request books the next free slot,
  so the quota is never exceeded, and the next slot is booked while the previous request waits,
  so a thread that wakes late costs nothing and the quota is used to the full.
- Without a quota the pacer learns one. It starts gently (the in-flight window doubles every
  RAMP_DOUBLING seconds from INITIAL_WINDOW up to the concurrency, which stays the cap), takes a
  request rate from the `x-ratelimit-*` headers once the remaining quota runs low, cuts the rate
  on a 429 (once per volley, never far below what the server was accepting) and lets it double
  each second once the 429s stop. A Retry-After pauses every worker, not just the one that got it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .retry import header_number

#: Requests in flight at the very start, before anything is known about the server.
INITIAL_WINDOW = 4
#: Seconds for the start-up window to double (64 in flight after ~0.02 s). The ramp is clocked by
#: time, not replies, so it only spreads the first volley: at 0.02 s it held a short run's last
#: workers back ~0.08 s, 10% of a 4-wave run of 200 ms calls, and learned nothing more by it.
RAMP_DOUBLING = 0.005
#: How far ahead of its slot a request may book it: a thread that wakes late still sends in its
#: slot's turn (the quota stays fully used on a busy machine), and rate changes still act fast.
BOOK_AHEAD = 0.25
#: Share of a rate announced by `x-ratelimit-*` headers that we use: the rest absorbs jitter.
SAFETY = 0.95
#: Rate multiplier on a 429 that came with no quota headers.
DECREASE = 0.5
#: Rate multiplier on a 429 while already pacing at the rate the quota headers announce.
TRIM = 0.9
#: Seconds for a cut rate to double again while no 429 comes (it recovers in time, not per reply,
#: so a deep cut does not starve itself of the successes it would need to recover).
RECOVERY_DOUBLING = 1.0
#: A cut never goes below this share of the rate the server was accepting just before it.
ACCEPTED_FLOOR = 0.9
#: Floor of a learned rate, requests per second.
MIN_RATE = 0.05
#: Seconds of recent starts that measure the current rate when a 429 arrives.
MEASURE_SPAN = 2.0
#: Weight of the newest sample in the running latency and tokens-per-call averages.
EWMA_WEIGHT = 0.2
#: Longest wait between re-checks when nothing notifies a waiting thread.
IDLE_CHECK = 0.25
SECONDS_PER_MINUTE = 60.0
REQUESTS, TOKENS = "requests", "tokens"


class Slots:
    """A GCRA schedule: `rate` units per second, no burst; `tat` is the next free moment."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tat = -math.inf

    def earliest(self, now: float) -> float:
        return max(now, self.tat)

    def book(self, at: float, cost: float) -> None:
        self.tat = max(self.tat, at) + cost / self.rate

    def adjust(self, cost: float) -> None:
        """Charge (cost > 0) or refund (cost < 0) units after the fact."""
        if self.tat > -math.inf:
            self.tat += cost / self.rate


@dataclass(frozen=True)
class Permit:
    """Leave to send one request: when it started and the tokens booked for it."""

    start: float
    tokens: float


def quota_headers(headers: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """(limit per minute, remaining) for requests and tokens from `x-ratelimit-*` headers."""
    found = {}
    for kind in (REQUESTS, TOKENS):
        limit = header_number(headers, f"x-ratelimit-limit-{kind}")
        remaining = header_number(headers, f"x-ratelimit-remaining-{kind}")
        if limit and remaining is not None:
            found[kind] = (limit, remaining)
    return found


class Pacer:
    """Shared by every worker: permits to start requests, and what the replies taught it."""

    def __init__(
        self,
        *,
        concurrency: int,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self._clock = clock
        self._quota: dict[str, Slots] = {}
        if rpm:
            self._quota[REQUESTS] = Slots(rpm / SECONDS_PER_MINUTE)
        if tpm:
            self._quota[TOKENS] = Slots(tpm / SECONDS_PER_MINUTE)
        self._learned: dict[str, Slots] = {}
        self._ceiling: dict[str, float] = {}
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._in_flight = 0
        self._successes = 0
        self._started_at: float | None = None
        self._paused_until = -math.inf
        self._last_cut = -math.inf
        self._recent: deque[float] = deque(maxlen=4096)
        self._accepted: deque[float] = deque(maxlen=4096)
        self._recovery: dict[str, tuple[float, float]] = {}  # kind -> (rate at the cut, when)
        self._latency: float | None = None
        self._tokens_per_call: float | None = None
        self.throttled = 0
        self.cuts = 0

    @property
    def needs_tokens(self) -> bool:
        """Whether permits should carry a token estimate (a --tpm quota is set)."""
        return TOKENS in self._quota

    def rate(self, kind: str = REQUESTS) -> float | None:
        """The learned rate per second in force (None: not pacing on this dimension)."""
        with self._cond:
            slots = self._learned.get(kind)
            return slots.rate if slots else None

    def paced_rpm(self) -> float | None:
        """The learned request rate in force, per minute, for a user choosing --rpm (None: free)."""
        rate = self.rate()
        return None if rate is None else round(rate * SECONDS_PER_MINUTE, 1)

    def close(self) -> None:
        """Refuse every permit from now on and wake every waiting thread."""
        self._closed.set()
        with self._cond:
            self._cond.notify_all()

    def reopen(self) -> None:
        """Grant permits again after `close` (the executor's next run after a handled halt)."""
        self._closed.clear()

    def acquire(self, tokens: float = 0.0) -> Permit | None:
        """Block until a request may start; None once the pacer is closed."""
        while True:
            with self._cond:
                while True:
                    if self._closed.is_set():
                        return None
                    now = self._clock()
                    if self._started_at is None:
                        self._started_at = now
                    wait = self._blocked_for(now)
                    if wait <= 0:
                        break
                    self._cond.wait(min(wait, IDLE_CHECK))
                cost = tokens or self._tokens_per_call or 0.0
                start = self._book(now, cost)
                self._in_flight += 1
                pause_mark = self._paused_until
            if start > now and self._closed.wait(start - now):
                self._unbook()
                return None
            with self._cond:
                if self._paused_until > pause_mark and self._paused_until > self._clock():
                    self._in_flight -= 1  # a 429 arrived while we waited for our slot
                    continue
                self._recent.append(start)
            return Permit(start, cost)

    def release(
        self,
        permit: Permit,
        *,
        status: int | None,
        headers: Mapping[str, str] | None = None,
        tokens_used: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Report how a permitted request went: its status (None: no reply) and headers."""
        with self._cond:
            self._in_flight -= 1
            now = self._clock()
            if tokens_used is not None:
                self._settle_tokens(permit, tokens_used)
            quotas = quota_headers(headers or {})
            if status == 429:
                self._throttled(permit, now, quotas, retry_after)
                self._follow_headers(quotas)
                self._cond.notify_all()
                return
            if status is not None and status < 400:
                self._latency = _ewma(self._latency, now - permit.start)
                self._successes += 1
                self._accepted.append(now)
            self._follow_headers(quotas)
            if status is not None and status < 400 and permit.start >= self._last_cut:
                self._recover(now)
            self._cond.notify()

    # ---- under the lock ----

    def _blocked_for(self, now: float) -> float:
        """Seconds until a request might start (0: now)."""
        if now < self._paused_until:
            return self._paused_until - now
        window, grows_in = self._window(now)
        if self._in_flight >= window:
            return grows_in
        earliest = max((s.earliest(now) for s in self._all_slots()), default=now)
        return max(0.0, earliest - now - BOOK_AHEAD)

    def _window(self, now: float) -> tuple[int, float]:
        """Requests allowed in flight now, and seconds until that grows."""
        elapsed = now - (self._started_at or now)
        doublings = elapsed / RAMP_DOUBLING
        if doublings > math.log2(self.concurrency):
            return self.concurrency, IDLE_CHECK
        ramp = INITIAL_WINDOW * 2**doublings
        window = min(self.concurrency, max(int(ramp), INITIAL_WINDOW + self._successes))
        if window >= self.concurrency:
            return self.concurrency, IDLE_CHECK
        grows_at = RAMP_DOUBLING * math.log2((window + 1) / INITIAL_WINDOW)
        return window, max(0.001, grows_at - elapsed)

    def _all_slots(self) -> list[Slots]:
        return [*self._quota.values(), *self._learned.values()]

    def _book(self, now: float, tokens: float) -> float:
        slots = [(s, 1.0) for k, s in self._quota.items() if k == REQUESTS]
        slots += [(s, tokens) for k, s in self._quota.items() if k == TOKENS]
        slots += [(s, 1.0 if k == REQUESTS else tokens) for k, s in self._learned.items()]
        start = max((s.earliest(now) for s, _ in slots), default=now)
        for s, cost in slots:
            s.book(start, cost)
        return start

    def _unbook(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify()

    def _settle_tokens(self, permit: Permit, used: int) -> None:
        if permit.tokens:  # a call cannot use more than its prompt and output cap: a server
            used = min(used, int(2 * permit.tokens))  # that says so must not stall the pacer
        self._tokens_per_call = _ewma(self._tokens_per_call, float(used))
        for kind, slots in (*self._quota.items(), *self._learned.items()):
            if kind == TOKENS:
                slots.adjust(used - permit.tokens)

    def _throttled(
        self,
        permit: Permit,
        now: float,
        quotas: dict[str, tuple[float, float]],
        retry_after: float | None,
    ) -> None:
        """A 429: pause everyone for Retry-After, and cut the rate once per volley."""
        self.throttled += 1
        if retry_after:
            self._paused_until = max(self._paused_until, now + retry_after)
        if permit.start < self._last_cut:
            return  # sent before the last cut: that cut already answered this volley
        self._last_cut = now
        self.cuts += 1
        ceiling = self._announced(quotas, REQUESTS)
        current = self._learned.get(REQUESTS)
        if ceiling is not None:
            # Already at the announced rate: arrival jitter, or another client on the quota.
            at_ceiling = current is not None and current.rate <= ceiling
            self._set_rate(REQUESTS, max(MIN_RATE, current.rate * TRIM) if at_ceiling else ceiling)
        else:
            measured = _rate_of(self._recent, now)
            base = min(current.rate if current else math.inf, measured or math.inf)
            if base == math.inf:
                base = float(INITIAL_WINDOW)
            floor = ACCEPTED_FLOOR * (_rate_of(self._accepted, now) or 0.0)
            self._set_rate(REQUESTS, max(MIN_RATE, base * DECREASE, min(floor, base)))
        tokens_ceiling = self._announced(quotas, TOKENS)
        if tokens_ceiling is not None and quotas[TOKENS][1] < self._token_headroom():
            self._set_rate(TOKENS, tokens_ceiling)

    def _follow_headers(self, quotas: dict[str, tuple[float, float]]) -> None:
        """Pace at the announced rate while the remaining quota is low; stop when it is ample."""
        for kind, (_, remaining) in quotas.items():
            headroom = self.concurrency if kind == REQUESTS else self._token_headroom()
            ceiling = max(self._announced(quotas, kind) or 0.0, self._floor(kind))
            if remaining < headroom:
                self._ceiling[kind] = ceiling
                current = self._learned.get(kind)
                if current is None or current.rate > ceiling:
                    self._set_rate(kind, ceiling)
            else:
                self._ceiling.pop(kind, None)

    def _recover(self, now: float) -> None:
        """After a success: raise a cut rate toward the announced one, or stop pacing."""
        for kind, slots in list(self._learned.items()):
            cut_rate, cut_at = self._recovery.get(kind, (slots.rate, now))
            raised = max(slots.rate, cut_rate * 2 ** ((now - cut_at) / RECOVERY_DOUBLING))
            ceiling = self._ceiling.get(kind)
            if ceiling is not None:
                slots.rate = min(raised, ceiling)
            elif raised >= self._unbounded_rate(kind):
                del self._learned[kind]
                self._recovery.pop(kind, None)
            else:
                slots.rate = raised

    def _announced(self, quotas: dict[str, tuple[float, float]], kind: str) -> float | None:
        if kind not in quotas:
            return None
        return quotas[kind][0] / SECONDS_PER_MINUTE * SAFETY

    def _set_rate(self, kind: str, rate: float) -> None:
        """Pace `kind` at `rate`, never below MIN_RATE calls a second (whatever a header says)."""
        rate = max(rate, self._floor(kind))
        slots = self._learned.get(kind)
        if slots is None:
            self._learned[kind] = slots = Slots(rate)
        slots.rate = rate
        self._recovery[kind] = (rate, self._clock())

    def _floor(self, kind: str) -> float:
        """The slowest pace a server can make us take: MIN_RATE calls a second."""
        return MIN_RATE * (1.0 if kind == REQUESTS else max(self._tokens_per_call or 1.0, 1.0))

    def _unbounded_rate(self, kind: str) -> float:
        """A rate so high that the concurrency cap binds first: pacing is moot beyond it."""
        latency = self._latency or 0.001
        per_call = 1.0 if kind == REQUESTS else (self._tokens_per_call or 1.0)
        return 2 * self.concurrency * per_call / max(latency, 0.001)

    def _token_headroom(self) -> float:
        return self.concurrency * (self._tokens_per_call or 1.0)


def _rate_of(times: deque[float], now: float) -> float | None:
    """Events per second over the last MEASURE_SPAN seconds (None: too few to tell)."""
    recent = [t for t in times if t >= now - MEASURE_SPAN]
    if len(recent) < 2:
        return None
    return len(recent) / max(now - recent[0], 1e-3)


def _ewma(previous: float | None, sample: float) -> float:
    return sample if previous is None else previous + EWMA_WEIGHT * (sample - previous)
