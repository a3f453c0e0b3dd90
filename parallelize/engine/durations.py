"""Durations as people and rate-limit headers write them: `90`, `1.5s`, `120ms`, `6m0s`, `7d`."""

from __future__ import annotations

import math
import re

UNIT_SECONDS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)")
_WHOLE = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*(?:ms|d|h|m|s)\s*)+")

#: How the CLI explains the format in error messages.
DURATION_EXAMPLES = "e.g. 90, 90s, 10m, 1h30m, 7d"


def parse_duration(text: str) -> float | None:
    """Seconds in `text` (a bare number is seconds), or None when it is not a duration."""
    value = text.strip().lower()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        if not _WHOLE.fullmatch(value):
            return None
        seconds = sum(float(n) * UNIT_SECONDS[unit] for n, unit in _PART.findall(value))
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def format_duration(seconds: float) -> str:
    """A short human duration: `850ms`, `12.5s`, `3m20s`, `2h5m`, `3d4h`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"
