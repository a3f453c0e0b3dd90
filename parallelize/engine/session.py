"""One run's engine: RunOptions, and `engine()`, which builds the executor every command uses.

Around the executor: the cache it uses, SIGINT/SIGTERM routed to it, a dry run's estimate checked
against the budget, and what the engine knows (cost, throttling, why it stopped) written into the
command's RunResult.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..defaults import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, default_cache_dir
from ..errors import EXIT_BUDGET, EXIT_USAGE, CacheError, EndpointError, combine_exit_codes
from ..masking import mask
from ..recipe.model import Recipe
from ..records import ChatRequest, Notice, ProgressCallback, RunResult, TaskResult
from ..reports import EngineReport
from .batchoptions import BatchOptions, batch_for
from .client import DEFAULT_OPENAI_MODEL, ChatClient, Endpoint
from .costs import Ledger, Price, PriceBook, estimate
from .executor import Executor
from .pacing import Pacer
from .retry import RetryPolicy

if TYPE_CHECKING:
    from ..tools.kit import ToolSettings
    from .cache import CallCache
    from .toolloop import ToolLoop


def open_cache(
    enabled: bool, directory: str | Path | None, notice: Callable[[str], None]
) -> CallCache | None:
    """The call cache; None when it is off, or cannot be opened (then a notice says so)."""
    if not enabled:
        return None
    from .cache import CallCache  # here: sqlite3 is loaded only when the cache is on

    try:
        cache = CallCache(directory or default_cache_dir())
    except CacheError as exc:
        notice(f"warning: {exc}; running without the cache")
        return None
    if cache.warning and cache.path not in _WARNED:  # a newer file: said once per process
        _WARNED.add(cache.path)
        notice(f"warning: {cache.warning}")
    return cache


_WARNED: set[Path] = set()
#: The kind of fact the model list is kept under (per endpoint, model "").
MODELS_FACT = "models"


def record_engine(result: RunResult, executor: Executor) -> RunResult:
    """Add what the engine knows to a command's result: cost, throttling, and why it stopped.

    Every command calls this once its calls are done; it may raise the exit code, never lower it.
    """
    batched = {id(r.task) for r in executor.batched}  # held by the executor: ids stay unique
    result.engine = EngineReport(
        cost=executor.ledger.report(),
        requests=executor.attempts,
        cached=executor.cached,
        throttled=executor.pacer.throttled,
        paced_rpm=executor.pacer.paced_rpm(),
        stopped=executor.halt.reason if executor.halt else None,
        retries=executor.retries,
        retry_budget_refused=executor.budget.refused,
        task_costs={
            r.task.index: _cost(executor.ledger.prices, r, batch=id(r.task) in batched)
            for r in result.results
        },
    )
    if (refused := executor.retry_warning()) is not None:
        result.warnings.append(refused)
    unfinished = [r for r in result.all_calls if not r.succeeded]
    if executor.halt is not None and unfinished:
        skipped = sum(1 for r in unfinished if r.attempts == 0)
        # A fatal halt (auth, a bad parameter) would stop a re-run the same way.
        rerun = executor.cache is not None and executor.halt.reason != "fatal"
        resume = "; re-run the same command to do the rest" if rerun else ""
        result.warnings.append(
            f"stopped early: {executor.halt.message}; {skipped} call(s) not started{resume}"
        )
        result.exit_code = combine_exit_codes(result.exit_code, executor.exit_code)
    return result


def _cost(prices: PriceBook, result: TaskResult, *, batch: bool = False) -> float | None:
    """What one result's calls cost at the run's prices (a cache hit cost nothing; `batch`: a
    batch answered it, at the batch rates)."""
    price = prices.price(result.task.request.model, batch=batch)
    usage = result.usage
    if price is None:
        return None
    return price.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)


def estimate_plan(
    result: RunResult,
    prices: PriceBook,
    max_cost: float | None,
    *,
    count: Callable[[ChatRequest], int] | None = None,
) -> RunResult:
    """A dry run's cost estimate (outputs at max_tokens), checked against --max-cost (exit 5).
    With --batch every call would be batched: the estimate is at the batch rates.

    `count`: the plan's own counter, so the estimate and the plan agree (else tiktoken's)."""
    requests = (t.request for t in result.tasks)
    planned = estimate(requests, prices, count=count) if count else estimate(requests, prices)
    result.estimate = planned
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


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what): endpoint, retries, cache, pacing, limits, and where progress goes."""

    endpoint: Endpoint | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    dry_run: bool = False
    on_event: ProgressCallback | None = None
    on_notice: Notice | None = None
    #: Reuse and store finished calls (--no-cache turns it off; --refresh only stores).
    cache: bool = True
    refresh: bool = False
    cache_dir: str | Path | None = None
    #: A known quota to stay within (requests / tokens per minute); None: pace adaptively.
    rpm: float | None = None
    tpm: float | None = None
    #: Stop starting calls after this many failed, after this many seconds, or at this USD cost.
    max_failures: int | None = None
    deadline: float | None = None
    max_cost: float | None = None
    #: USD per million tokens for the run's model(s), over `prices` and the built-in table.
    price_in: float | None = None
    price_out: float | None = None
    price_cached_in: float | None = None
    prices: Mapping[str, Price] = field(default_factory=dict)
    #: --batch: through the provider's Batch API; the calls a batch answers are billed at its
    #: rates, the rest (--finish-online) online (None: online).
    batch: BatchOptions | None = None
    #: --tools (added to the recipe's), --max-tool-rounds, --tool-concurrency, and the root the
    #: tools see (None: the working directory).
    tools: tuple[str, ...] = ()
    max_tool_rounds: int | None = None
    tool_concurrency: int | None = None
    tool_root: str | None = None
    #: The tools this run offers (set by `for_recipe`; None: no tools).
    toolset: ToolSettings | None = None

    def for_recipe(self, recipe: Recipe) -> RunOptions:
        """These options, with the recipe's rpm, tpm, max_cost and prices where none are set."""
        return replace(
            self,
            rpm=self.rpm if self.rpm is not None else recipe.rpm,
            tpm=self.tpm if self.tpm is not None else recipe.tpm,
            max_cost=self.max_cost if self.max_cost is not None else recipe.max_cost,
            batch=batch_for(self.batch, recipe, tools=self.tools),
            prices={
                **{model: Price(**spec.model_dump()) for model, spec in recipe.prices.items()},
                **self.prices,
            },
            toolset=self.tool_settings(recipe),
        )

    def tool_settings(self, recipe: Recipe) -> ToolSettings | None:
        """The recipe's tools and --tools, with the limits; None when the run offers none."""
        flagged = [name for name in self.tools if name not in recipe.tools]
        entries = (*recipe.tools, *flagged)
        if not entries:
            return None
        from ..inputs.bounds import Reserved
        from ..tools.kit import ToolSettings

        cache = Reserved(str(self.cache_dir or default_cache_dir()), "--cache-dir")
        return ToolSettings(
            entries,  # type: ignore[arg-type]  # --tools names are checked by the CLI
            max_rounds=self.max_tool_rounds or recipe.max_tool_rounds,
            concurrency=self.tool_concurrency,
            root=self.tool_root or ".",
            reserved=(cache,),
        )

    def price_book(self) -> PriceBook:
        """Where this run's prices come from: flags, then recipe, then the built-in table."""
        return PriceBook(
            dict(self.prices),
            price_in=self.price_in,
            price_out=self.price_out,
            price_cached_in=self.price_cached_in,
            batch=self.batch is not None,
        )


@contextmanager
def engine(options: RunOptions, *, concurrency: int) -> Iterator[Executor]:
    """The executor every command runs its calls through: one client, cache, pacer and ledger.

    While it runs, SIGINT/SIGTERM stop new calls, and the calls that finished stay in the cache.
    Commands pass their RunResult through `engine.record_engine` once the calls are done.
    """
    endpoint = options.endpoint or Endpoint.resolve()
    notice = options.on_notice or (lambda message: None)
    with ExitStack() as stack:
        client = stack.enter_context(ChatClient(endpoint, timeout=options.timeout))
        cache = open_cache(options.cache, options.cache_dir, notice)
        if cache is not None:
            stack.enter_context(cache)
        executor = Executor(
            client,
            concurrency=concurrency,
            retry=RetryPolicy(max_retries=options.max_retries),
            on_event=options.on_event,
            cache=cache,
            refresh=options.refresh,
            pacer=Pacer(concurrency=concurrency, rpm=options.rpm, tpm=options.tpm),
            ledger=Ledger(options.price_book(), max_cost=options.max_cost),
            max_failures=options.max_failures,
            deadline=time.monotonic() + options.deadline if options.deadline else None,
            on_notice=notice,
            batch=options.batch,
        )
        executor.tools = _tool_loop(options, concurrency, stack)
        stack.enter_context(stop_on_signals(executor))
        yield executor


def _tool_loop(options: RunOptions, concurrency: int, stack: ExitStack) -> ToolLoop | None:
    """The run's tools (their pool: --tool-concurrency, else 3x the calls), closed at the end."""
    if options.toolset is None:
        return None
    from ..tools.kit import ToolKit
    from .toolloop import ToolLoop

    workers = options.toolset.concurrency or 3 * concurrency
    kit = ToolKit(options.toolset, workers=workers)
    stack.callback(kit.close)
    return ToolLoop(kit)


def estimate_run(
    result: RunResult, options: RunOptions, *, count: Callable[[ChatRequest], int] | None = None
) -> RunResult:
    """A dry run's estimate under the run's prices and budget, naming the tools it offers."""
    if options.toolset is not None:
        names = ", ".join(options.toolset.names())
        result.warnings.append(
            f"tools offered to worker calls: {names} (up to {options.toolset.max_rounds} tool "
            "rounds each); the estimate counts one round per call"
        )
    return estimate_plan(result, options.price_book(), options.max_cost, count=count)


def default_model(
    client: ChatClient, *, store: CallCache | None = None, refresh: bool = False
) -> str:
    """OpenAI's default model, or the only model a local server lists (the list is kept in
    `store` for a day, so a re-run needs no server to choose)."""
    if client.endpoint.is_openai:
        return DEFAULT_OPENAI_MODEL
    listed = list_models(client, store=store, refresh=refresh)
    if len(listed) == 1:
        return listed[0]
    choices = f" (the server lists: {', '.join(listed[:10])})" if listed else ""
    raise EndpointError(
        f"no model chosen for {mask(client.endpoint.base_url)}{choices}",
        hint="pass --model NAME or set PARALLELIZE_MODEL",
    )


def list_models(
    client: ChatClient, *, store: CallCache | None = None, refresh: bool = False
) -> list[str]:
    """The models an endpoint lists: remembered (a day) unless `refresh`, else asked and kept."""
    base = client.endpoint.base_url
    try:
        kept = store.get_fact(base, "", MODELS_FACT) if store and not refresh else None
        if kept is not None and isinstance(kept[0], list):
            return [str(name) for name in kept[0]]
        listed = client.list_models()
        if listed and store is not None:
            store.put_fact(base, "", MODELS_FACT, listed)
        return listed
    except CacheError:  # a broken cache only costs the request
        return client.list_models()
