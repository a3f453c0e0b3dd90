"""A retry budget shared by the workers of a run: retries cannot multiply a failing server's load.

It is gRPC's retry throttling (proposal A6, `retryThrottling`): a bucket of `max_tokens` starts
full; every attempt that fails in a way worth retrying (5xx, 408/409, a reset, a timeout, a
malformed reply) takes one token, every answered attempt gives back TOKEN_RATIO, and a retry is
allowed only while more than half the bucket is left.

The parameters. With TOKEN_RATIO = 0.25 a failure rate up to 20% pays for its own retries (four
successes refill one failure), so a sustained 12% (the benchmark's 10% 5xx + 2% resets) never
throttles; a 50% storm drains the bucket and then gets no retries at all. Whatever the failures,
retries stay below `max_tokens / 2 + TOKEN_RATIO x successes`: a run of N calls sends at most
1.25 N + max_tokens / 2 requests (429s aside). The room (failures in a row that are all retried)
is the concurrency, at least MIN_ROOM: one volley of failures from every worker at once (a proxy
hiccup) is absorbed, and a small run keeps its --max-retries.

What a refused retry means. Like gRPC, the call fails at once instead of waiting: the bucket refills
only from other calls' successes, so in a storm a call parked on the slow backoff would hold its
worker for the whole ladder (up to 15 s at the default 6 retries) and fail anyway. Its error says
"retry budget exhausted" and that a re-run resumes: the cache keeps every finished call, so the
re-run sends only the failed ones, once the server is healthy. When the whole room failed in a row
(not one answer among the last `max_tokens / 2` attempts) the server looks down rather than flaky:
`outage` tells the executor to stop starting calls, instead of trying every remaining call once
against a dead server.

Not counted: a 429 (the server asking us to slow down; the pacer slows every worker and the retry
waits as long as the server said, so it neither costs nor refills tokens, and a throttled run's
opening volley cannot exhaust the budget), and failures no retry helps (a context overflow, an
auth error, a rejected parameter).
"""

from __future__ import annotations

import threading
from collections import deque

#: Tokens one answered attempt gives back: failures up to TOKEN_RATIO / (1 + TOKEN_RATIO) = 20%
#: of attempts are retried forever; more drain the bucket.
TOKEN_RATIO = 0.25
#: Failures in a row that are all retried, however small the concurrency.
MIN_ROOM = 20
#: Recent attempts the refusal message counts failures among.
RECENT = 100


class RetryBudget:
    """A token bucket of retries (gRPC A6), thread-safe, shared by the workers of one run."""

    def __init__(self, *, max_tokens: float, token_ratio: float = TOKEN_RATIO) -> None:
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.tokens = max_tokens
        #: Retries refused so far, and failed attempts in a row (0 after any answer).
        self.refused = 0
        self.streak = 0
        self._recent: deque[bool] = deque(maxlen=RECENT)
        self._lock = threading.Lock()

    @classmethod
    def for_concurrency(cls, concurrency: int) -> RetryBudget:
        """A budget whose room (failures in a row all retried) is the concurrency, >= MIN_ROOM."""
        room = max(MIN_ROOM, concurrency)
        # One more than twice the room: the failure that leaves exactly half is the first refused.
        return cls(max_tokens=2 * (room + 1))

    @property
    def threshold(self) -> float:
        """Retries are allowed only while more tokens than this are left."""
        return self.max_tokens / 2

    def succeeded(self) -> None:
        """An attempt was answered."""
        with self._lock:
            self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)
            self.streak = 0
            self._recent.append(True)

    def failed(self) -> None:
        """An attempt failed in a way worth retrying (not a 429, not a fatal error)."""
        with self._lock:
            self.tokens = max(0.0, self.tokens - 1)
            self.streak += 1
            self._recent.append(False)

    def allow(self) -> bool:
        """Whether a retry may go out now; a refusal is counted."""
        with self._lock:
            if self.tokens > self.threshold:
                return True
            self.refused += 1
            return False

    @property
    def outage(self) -> bool:
        """Whether the whole room failed in a row: the server looks down, not flaky."""
        return self.streak >= self.threshold

    def reason(self) -> str:
        """Why retries are refused, in a few words (each refused call's error says it)."""
        with self._lock:
            streak = self.streak
        if streak >= self.threshold:
            return f"retry budget exhausted: the last {streak} attempts all failed"
        return "retry budget exhausted: too many calls are failing"

    def warning(self, *, cached: bool) -> str | None:
        """The run's warning about the calls whose retry was refused (None: none was)."""
        with self._lock:
            refused, failed, seen = self.refused, self._recent.count(False), len(self._recent)
        if not refused:
            return None
        kept = " (finished calls are kept in the cache)" if cached else ""
        return (
            f"{refused} call(s) failed without a retry: {self.reason()} ({failed} of the last "
            f"{seen} attempts failed); {rerun_advice(cached=cached)}{kept}"
        )


def rerun_advice(*, cached: bool) -> str:
    """What running the same command again does for the calls that failed."""
    if not cached:
        return "the cache is off, so a re-run makes every call again"
    return "re-run the same command to resume"
