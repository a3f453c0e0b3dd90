"""How a run uses the Batch API (--batch, --detach, --batch-retries, --finish-online), and how
often it asks about its batches (PARALLELIZE_BATCH_POLL, growing towards POLL_CEILING)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError
from ..recipe.model import Recipe

#: Seconds between the first polls: a batch takes minutes to hours (24 h at most).
DEFAULT_POLL = 30.0
#: Each wait is this much longer than the one before, up to POLL_CEILING seconds.
POLL_GROWTH = 1.5
POLL_CEILING = 600.0
#: How often a failed or expired line is submitted again by default.
DEFAULT_BATCH_RETRIES = 1
POLL_ENV = "PARALLELIZE_BATCH_POLL"


@dataclass(frozen=True)
class BatchOptions:
    """--batch and its companions."""

    #: --batch or the recipe's `batch: true` (off: the companions were given alone).
    enabled: bool = True
    #: Submit (or poll once), print the batch ids, exit 6 while any is still running.
    detach: bool = False
    #: How often a failed, expired or cancelled line is resubmitted.
    retries: int = DEFAULT_BATCH_RETRIES
    #: Finish the lines still failed after the retries with online requests instead.
    finish_online: bool = False
    #: Seconds before the second poll (later ones grow); None: PARALLELIZE_BATCH_POLL or 30.
    poll: float | None = None
    #: --export FILE: write the calls to FILE for another runner instead of submitting them.
    export: Path | None = None

    def waits(self) -> Iterator[float]:
        """The seconds to wait before each next poll: growing from the first, capped."""
        wait = self.poll if self.poll is not None else poll_seconds()
        ceiling = max(wait, POLL_CEILING)
        while True:
            yield wait
            wait = min(wait * POLL_GROWTH, ceiling)


def batch_for(
    options: BatchOptions | None, recipe: Recipe, *, tools: Sequence[str] = ()
) -> BatchOptions | None:
    """The run's batch settings once the recipe is known (`batch: true` turns them on). A
    companion flag without --batch, or what a batch cannot do yet (tool loops, early stopping:
    each needs an answer before the next call), is a usage error before any request. `tools`:
    the --tools flag's names, offered on top of the recipe's."""
    enabled = recipe.batch or (options is not None and options.enabled)
    if not enabled:
        if options is not None and (given := _companions(options)):
            raise ConfigError(
                f"{given[0]} needs --batch", hint="add --batch, or `batch: true` to the recipe"
            )
        return None
    if getattr(recipe, "tools", None) or tools:
        flag = "--export" if options is not None and options.export is not None else "--batch"
        raise ConfigError(
            f"{flag} cannot be combined with tools yet: a tool loop needs each answer before "
            "its next call",
            hint=f"drop {flag}, or the recipe's tools: and --tools",
        )
    if recipe.vote.stops_early:
        raise ConfigError(
            "--batch cannot be combined with early stopping yet: each wave of samples needs "
            "the answers of the one before",
            hint="drop --batch, or pass --no-early-stop (early_stop: false in the recipe)",
        )
    return replace(options or BatchOptions(), enabled=True)


def _companions(options: BatchOptions) -> list[str]:
    """The companion flags given (each needs --batch)."""
    given = (
        ("--detach", options.detach),
        ("--batch-retries", options.retries != DEFAULT_BATCH_RETRIES),
        ("--finish-online", options.finish_online),
    )
    return [name for name, value in given if value]


def poll_seconds() -> float:
    """PARALLELIZE_BATCH_POLL (seconds, > 0), else DEFAULT_POLL."""
    raw = os.environ.get(POLL_ENV, "").strip()
    if not raw:
        return DEFAULT_POLL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{POLL_ENV}={raw!r} is not a number of seconds above 0",
            hint=f"set {POLL_ENV} to e.g. 60, or unset it for the default {DEFAULT_POLL:g}",
        )
    return value
