"""Which failures are retried and how long to wait: RetryPolicy, Retry-After, x-ratelimit-reset.

The executor runs the retry loop; the pacer slows every worker after a 429; this module only
decides.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..defaults import DEFAULT_MAX_RETRIES
from .durations import parse_duration

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


#: A 429 is retried at least this often: pacing makes them rare, and each one says when to return.
MIN_THROTTLE_RETRIES = 8


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring the server's Retry-After."""

    max_retries: int = DEFAULT_MAX_RETRIES
    base_delay: float = 0.5
    max_delay: float = 60.0

    @property
    def max_throttled(self) -> int:
        """Retries allowed for 429s, counted apart from other failures (none when retries are)."""
        return max(self.max_retries, MIN_THROTTLE_RETRIES) if self.max_retries else 0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if retry_after is not None:  # within MAX_SERVER_WAIT: the executor refuses longer
            return retry_after
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
