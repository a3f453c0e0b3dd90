"""What the engine adds around a command's calls: cache, signals, cost estimates, the record.

`run.engine()` builds the executor; these helpers open the cache it uses, route SIGINT/SIGTERM to
it, check a dry run's estimate against the budget, and write what the engine knows (cost,
throttling, why it stopped) into the command's RunResult.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .costs import PriceBook, estimate
from .errors import EXIT_BUDGET, EXIT_USAGE, CacheError, combine_exit_codes
from .executor import Executor
from .records import RunResult

if TYPE_CHECKING:
    from .cache import CallCache


def open_cache(
    enabled: bool, directory: str | Path | None, notice: Callable[[str], None]
) -> CallCache | None:
    """The call cache; None when it is off, or cannot be opened (then a notice says so)."""
    if not enabled:
        return None
    from .cache import CallCache, default_cache_dir

    try:
        return CallCache(directory or default_cache_dir())
    except CacheError as exc:
        notice(f"warning: {exc}; running without the cache")
        return None


def record_engine(result: RunResult, executor: Executor) -> RunResult:
    """Add what the engine knows to a command's result: cost, throttling, and why it stopped.

    Every command calls this once its calls are done; it may raise the exit code, never lower it.
    """
    result.details["cost"] = executor.ledger.summary()
    result.details["engine"] = {
        "requests": executor.attempts,
        "cached": executor.cached,
        "throttled": executor.pacer.throttled,
        "paced_rpm": executor.pacer.paced_rpm(),
        "stopped": executor.halt.reason if executor.halt else None,
    }
    unfinished = [r for r in result.all_calls if not r.succeeded]
    if executor.halt is not None and unfinished:
        skipped = sum(1 for r in unfinished if r.attempts == 0)
        resume = "; re-run the same command to do the rest" if executor.cache else ""
        result.warnings.append(
            f"stopped early: {executor.halt.message}; {skipped} call(s) not started{resume}"
        )
        result.exit_code = combine_exit_codes(result.exit_code, executor.exit_code)
    return result


def estimate_plan(result: RunResult, prices: PriceBook, max_cost: float | None) -> RunResult:
    """A dry run's cost estimate (outputs at max_tokens), checked against --max-cost (exit 5)."""
    planned = estimate((t.request for t in result.tasks), prices)
    result.details["estimate"] = dataclasses.asdict(planned)
    if max_cost is None:
        return result
    if planned.cost is None:
        result.warnings.append(
            f"--max-cost needs a price, and there is none for model {', '.join(planned.unpriced)}"
            " (set --price-in and --price-out)"
        )
        result.exit_code = combine_exit_codes(result.exit_code, EXIT_USAGE)
    elif planned.cost > max_cost:
        result.warnings.append(
            f"estimated cost ${planned.cost:.4f} exceeds --max-cost ${max_cost:g}"
        )
        result.exit_code = combine_exit_codes(result.exit_code, EXIT_BUDGET)
    return result


@contextmanager
def stop_on_signals(executor: Executor) -> Iterator[None]:
    """While running, SIGINT and SIGTERM ask the executor to stop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: executor.interrupt())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
