"""Which failures are retried and how long to wait: RetryPolicy, Retry-After, x-ratelimit-reset.

The executor runs the retry loop; the pacer slows every worker after a 429; the retry budget
(retrybudget.py) stops retries while too many calls fail; this module only decides the waits.

When to retry. A server's wait (Retry-After, retry-after-ms, x-ratelimit-reset-*) is honoured as
asked. Otherwise the first retry after a 5xx, a reset or a timeout goes out within
FIRST_RETRY_JITTER (0-50 ms): one failure among many answers is nearly always transient (a backend
restarting behind a proxy, a keep-alive connection closed under us), and the old wait of 0-0.5 s
was longer than a whole 200 ms call, so a few faults stretched every run. The 50 ms of jitter still
spreads a volley of simultaneous failures. From the second retry on, the wait backs off
exponentially with full jitter, the ladder as before (0.5 s doubling, at most 60 s): up to 0.5 s,
1 s, 2 s, ... A call that keeps failing gets slower retries, and a server that fails most calls
gets none (the budget). A 429 without a stated wait never takes the quick path: the server asked
us to slow down, so its retries climb the ladder from the first one.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..defaults import DEFAULT_MAX_RETRIES
from .durations import format_duration, parse_duration

#: 4xx statuses worth another attempt: request timeout, conflict, rate limited (5xx all are).
RETRYABLE_STATUSES = frozenset({408, 409, 429})


#: The longest wait a server may ask for (Retry-After, x-ratelimit-reset-*). A longer one, or one
#: past --deadline, fails that call at once with the server's reason: a reply is never worth
#: hours of a worker, and a hostile server must not be able to park the run.
MAX_SERVER_WAIT = 120.0


def header_number(headers: Mapping[str, str], name: str) -> float | None:
    """A header's finite, non-negative number; None when absent or garbage (never trusted)."""
    try:
        value = float(headers.get(name, "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def rate_limit_reset_seconds(headers: Mapping[str, str]) -> float | None:
    """When an exhausted x-ratelimit-* quota refills (a 429 without Retry-After)."""
    waits = []
    for kind in ("requests", "tokens"):
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        remaining = headers.get(f"x-ratelimit-remaining-{kind}", "")
        if reset and remaining.strip() in ("0", ""):
            seconds = parse_duration(reset[:64])
            if seconds is not None:
                waits.append(seconds)
    return max(waits) if waits else None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """How long the server asked us to wait, from retry-after-ms or retry-after (seconds or an
    HTTP date); None when it did not say, or said something that is not a wait."""
    millis = header_number(headers, "retry-after-ms")
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after", "")[:64]
    seconds = header_number({"v": value}, "v")
    if seconds is not None or not value.strip():
        return seconds
    try:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def refused_wait(wait: float | None, deadline: float | None) -> str | None:
    """Why a wait the server asked for is not taken (beyond MAX_SERVER_WAIT or past `deadline`,
    a time.monotonic() value); None when it is taken or none was asked."""
    if wait is None:
        return None
    asked = f"the server asked to wait {format_duration(wait)}"
    if wait > MAX_SERVER_WAIT:
        return f"{asked}, more than the {MAX_SERVER_WAIT:g}s cap: not retried"
    if deadline is not None and time.monotonic() + wait > deadline:
        return f"{asked}, past the deadline (--deadline): not retried"
    return None


#: The first retry after a failure (not a 429) waits a uniform 0 to this many seconds.
FIRST_RETRY_JITTER = 0.05

#: A 429 is retried at least this often: pacing makes them rare, and each one says when to return.
MIN_THROTTLE_RETRIES = 8


@dataclass(frozen=True)
class RetryPolicy:
    """A quick first retry, then exponential backoff with full jitter; the server's wait wins."""

    max_retries: int = DEFAULT_MAX_RETRIES
    base_delay: float = 0.5
    max_delay: float = 60.0
    first_jitter: float = FIRST_RETRY_JITTER

    @property
    def max_throttled(self) -> int:
        """Retries allowed for 429s, counted apart from other failures (none when retries are)."""
        return max(self.max_retries, MIN_THROTTLE_RETRIES) if self.max_retries else 0

    def delay(
        self, attempt: int, retry_after: float | None = None, *, throttled: bool = False
    ) -> float:
        """Seconds to wait before retry number `attempt` (1-based); `throttled`: after a 429."""
        if retry_after is not None:  # within MAX_SERVER_WAIT: the executor refuses longer
            return retry_after
        if throttled:
            rung = attempt - 1
        elif attempt <= 1:
            return random.uniform(0, self.first_jitter)
        else:  # the quick retry came first; then the ladder from its first rung
            rung = attempt - 2
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**rung))
