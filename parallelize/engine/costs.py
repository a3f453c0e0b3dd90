"""What calls cost: a small built-in price table, overrides, estimates, and the budget ledger.

Prices are USD per million tokens. A model without a price shows tokens but no cost; a budget
(--max-cost) needs a price, so it asks for --price-in / --price-out. The ledger reserves each
call's estimate (prompt tokens plus max_tokens of output) when the call is dispatched, so calls
in flight can never carry the run past its budget. Estimates and reservations assume no prompt
cache hit (the list input rate); a call is charged what it used, its cached prompt tokens at the
cached rate. A call answered by a batch is charged the Batch API's rates, every other call the
online rates, also in a --batch run (--finish-online).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from ..errors import BudgetError, ConfigError
from ..inputs.tokens import get_counter
from ..records import ChatRequest, Usage
from ..reports import CostReport, Estimate

TOKENS_PER_UNIT = 1_000_000
#: When the built-in prices (list, cached input and batch rates) were read from the providers'
#: pages.
PRICES_AS_OF = "2025-08"
#: Output tokens assumed for a call that sets no max_tokens.
DEFAULT_OUTPUT_ESTIMATE = 1_024
#: Tokens each chat message adds beyond its text (role and framing).
MESSAGE_OVERHEAD_TOKENS = 4
#: A dated or versioned variant of a listed model (`gpt-4o-2024-08-06`, `gpt-4-0613`).
VARIANT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4}|latest)$")


@dataclass(frozen=True)
class Price:
    """USD per million tokens: input (prompt), output (completion), and the discounted rates.

    A discounted rate that is not known is None and falls back to the list rate: no discount is
    claimed that the provider does not list. `cached_input` prices the prompt tokens a provider
    served from its prompt cache; `batch_*` are the Batch API's rates.
    """

    input: float
    output: float
    cached_input: float | None = None
    batch_input: float | None = None
    batch_output: float | None = None

    @property
    def cached_rate(self) -> float:
        """What a cached prompt token costs (the input rate when no cached rate is listed)."""
        return self.input if self.cached_input is None else self.cached_input

    def cost(self, prompt_tokens: float, completion_tokens: float, cached: float = 0) -> float:
        """USD for a call's tokens; `cached` of the prompt tokens at the cached rate."""
        cached = min(max(cached, 0), prompt_tokens)
        fresh = (prompt_tokens - cached) * self.input + cached * self.cached_rate
        return (fresh + completion_tokens * self.output) / TOKENS_PER_UNIT

    def cache_saving(self, cached: float) -> float:
        """What `cached` prompt tokens saved against the input rate."""
        return cached * (self.input - self.cached_rate) / TOKENS_PER_UNIT


def openai_price(input: float, output: float, cached_input: float | None = None) -> Price:
    """An OpenAI list price: its Batch API bills half the list price, in and out."""
    return Price(input, output, cached_input, batch_input=input / 2, batch_output=output / 2)


#: OpenAI's prices (platform.openai.com/docs/pricing as of PRICES_AS_OF): input, output, cached
#: input. Prompt caching covers gpt-4o and newer: the older models have no cached rate.
PRICES: dict[str, Price] = {
    "gpt-5": openai_price(1.25, 10.00, 0.125),
    "gpt-5-mini": openai_price(0.25, 2.00, 0.025),
    "gpt-5-nano": openai_price(0.05, 0.40, 0.005),
    "gpt-4.1": openai_price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": openai_price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": openai_price(0.10, 0.40, 0.025),
    "gpt-4o": openai_price(2.50, 10.00, 1.25),
    "gpt-4o-mini": openai_price(0.15, 0.60, 0.075),
    "gpt-4-turbo": openai_price(10.00, 30.00),
    "gpt-4": openai_price(30.00, 60.00),
    "gpt-3.5-turbo": openai_price(0.50, 1.50),
    "o4-mini": openai_price(1.10, 4.40, 0.275),
    "o3": openai_price(2.00, 8.00, 0.50),
    "o3-mini": openai_price(1.10, 4.40, 0.55),
    "o1": openai_price(15.00, 60.00, 7.50),
    "o1-mini": openai_price(1.10, 4.40, 0.55),
}


def builtin_price(model: str) -> Price | None:
    """The list price of a model or of its dated variant; None when it is not in the table."""
    name = model.lower().rsplit("/", 1)[-1]
    return PRICES.get(name) or PRICES.get(VARIANT_SUFFIX.sub("", name))


@dataclass(frozen=True)
class PriceBook:
    """Where prices come from: --price-in/--price-out/--price-cached-in, then a recipe's
    `prices`, then the table.

    A flag replaces one rate of every model; the discounts derived from a replaced list rate are
    dropped (a cached or batch rate of the table does not belong to a price the table did not
    set), so --price-in alone claims no prompt-cache discount.
    """

    overrides: Mapping[str, Price] = field(default_factory=dict)
    price_in: float | None = None
    price_out: float | None = None
    price_cached_in: float | None = None
    #: --batch: a dry run's estimate prices every call at the Batch API's rates (each would be
    #: batched). The calls made are charged one by one (Ledger.settle's `batch`).
    batch: bool = False

    def price(self, model: str, *, batch: bool = False) -> Price | None:
        """The price of one model's tokens, or None when it is not known; `batch`: at the Batch
        API's rates (the list rate where none is known)."""
        base = self.overrides.get(model) or builtin_price(model)
        if base is None:
            if self.price_in is None or self.price_out is None:
                return None
            base = Price(self.price_in, self.price_out)
        changed: dict[str, float | None] = {}
        if self.price_in is not None:
            changed |= {"input": self.price_in, "cached_input": None, "batch_input": None}
        if self.price_out is not None:
            changed |= {"output": self.price_out, "batch_output": None}
        if self.price_cached_in is not None:
            changed["cached_input"] = self.price_cached_in
        price = replace(base, **changed)
        if self.price_cached_in is not None and self.price_cached_in > price.input:
            # A cached rate above the input rate would make every cached token a loss (a
            # negative prompt_cache_saved_usd); --price-in is checked against it by the CLI.
            raise ConfigError(
                f"--price-cached-in {self.price_cached_in:g} is above the input price of "
                f"{model} ({price.input:g} USD per million tokens): the cached rate is the "
                "discounted one",
                hint="lower --price-cached-in, or set --price-in for this model",
            )
        if batch:
            batch_in = price.input if price.batch_input is None else price.batch_input
            batch_out = price.output if price.batch_output is None else price.batch_output
            cached = None if price.cached_input is None else min(price.cached_input, batch_in)
            price = replace(price, input=batch_in, output=batch_out, cached_input=cached)
        return price


def output_cap(request: ChatRequest) -> int:
    """The most output tokens a call may produce: its max_tokens, else the default estimate."""
    params = request.params
    cap = params.get("max_completion_tokens") or params.get("max_tokens")
    return int(cap) if isinstance(cap, int) and cap > 0 else DEFAULT_OUTPUT_ESTIMATE


def prompt_tokens(request: ChatRequest) -> int:
    """Prompt tokens of a request, counted with the model's tokenizer (or the estimate)."""
    count = get_counter(request.model).count
    total = 0
    for message in request.messages:
        content = message.get("content")
        text = content if isinstance(content, str) else str(content or "")
        total += count(text) + MESSAGE_OVERHEAD_TOKENS
    return total


def estimate(
    requests: Iterable[ChatRequest],
    prices: PriceBook,
    *,
    count: Callable[[ChatRequest], int] = prompt_tokens,
    batch: bool | None = None,
) -> Estimate:
    """The dry-run estimate: prompts counted (by the plan's own counter when given) at the input
    rate (no prompt cache hit assumed), outputs at their max_tokens; at the batch rates when
    `batch` (None: when the book says the run is batched)."""
    batch = prices.batch if batch is None else batch
    calls = input_tokens = output_tokens = 0
    cost = 0.0
    unpriced: list[str] = []
    for request in requests:
        prompt, output = count(request), output_cap(request)
        calls += 1
        input_tokens += prompt
        output_tokens += output
        price = prices.price(request.model, batch=batch)
        if price is None:
            if request.model not in unpriced:
                unpriced.append(request.model)
        else:
            cost += price.cost(prompt, output)
    return Estimate(calls, input_tokens, output_tokens, None if unpriced else cost, tuple(unpriced))


class Ledger:
    """Spent, reserved and saved money of one run; thread-safe, shared by every worker."""

    def __init__(self, prices: PriceBook, *, max_cost: float | None = None) -> None:
        self.prices = prices
        self.max_cost = max_cost
        self.spent = 0.0
        self.saved = 0.0
        #: What the provider's prompt cache saved on the calls made (cached vs input rate).
        self.prompt_cache_saved = 0.0
        #: What the Batch API's rates saved against the list rates (None: no batch call).
        self.batch_saved: float | None = None
        self.reserved = 0.0
        self.unpriced: set[str] = set()
        self._lock = threading.Lock()

    def check(
        self, requests: list[ChatRequest], *, first: bool = True, batch: bool = False
    ) -> None:
        """A budget needs prices; before the `first` request, the estimate (at the batch rates
        when the calls go to a batch) must fit in it.

        Later stages (a merge, a judge) are held to the budget call by call instead, so that
        the work already paid for is kept.
        """
        if self.prices.price_cached_in is not None:  # its check is in price(): before any call
            for model in sorted({r.model for r in requests}):
                self.prices.price(model)
        if self.max_cost is None or not requests:
            return
        unknown = sorted({r.model for r in requests if self.prices.price(r.model) is None})
        if unknown:
            raise ConfigError(
                f"--max-cost needs a price, and there is none for model {', '.join(unknown)}",
                hint="set --price-in and --price-out (USD per million tokens), "
                "or `prices` in the recipe",
            )
        if not first:
            return
        planned = estimate(requests, self.prices, batch=batch)
        room = self.max_cost - self.spent - self.reserved
        if planned.cost is not None and planned.cost > room:
            raise BudgetError(
                f"the estimated cost ${planned.cost:.4f} of {planned.calls} call(s) "
                f"({planned.input_tokens:,} tokens in, up to {planned.output_tokens:,} out) "
                f"exceeds the budget: ${room:.4f} left of --max-cost ${self.max_cost:g}",
                hint="raise --max-cost, or lower max_tokens, or send less input",
            )

    def estimate_call(self, request: ChatRequest) -> float:
        """The most one call may cost (0 when there is no budget to hold it against)."""
        if self.max_cost is None:
            return 0.0
        price = self.prices.price(request.model)
        if price is None:
            return 0.0
        return price.cost(prompt_tokens(request), output_cap(request))

    def reserve(self, amount: float) -> bool:
        """Hold `amount` for a call about to start; False when the budget cannot cover it."""
        with self._lock:
            if self.max_cost is not None and self.spent + self.reserved + amount > self.max_cost:
                return False
            self.reserved += amount
            return True

    def settle(
        self, reserved: float, model: str, usage: Usage | None, *, batch: bool = False
    ) -> None:
        """Release a reservation and charge what the call really used (nothing if it failed);
        `batch`: a batch answered it (batch rates, and what they saved is counted)."""
        cost = self.cost(model, usage, batch=batch) if usage is not None else 0.0
        price = self.prices.price(model, batch=batch) if usage is not None else None
        saving = None
        if batch and usage is not None:
            listed = self.cost(model, usage)
            saving = max(0.0, listed - cost) if listed is not None and cost is not None else 0.0
        with self._lock:
            self.reserved = max(0.0, self.reserved - reserved)
            self.spent += cost or 0.0
            if price is not None and usage is not None and usage.cached_tokens:
                self.prompt_cache_saved += price.cache_saving(usage.cached_tokens)
            if saving is not None:
                self.batch_saved = (self.batch_saved or 0.0) + saving

    def save(self, model: str, usage: Usage) -> None:
        """Count what a cached call would have cost."""
        cost = self.cost(model, usage)
        with self._lock:
            self.saved += cost or 0.0

    def cost(self, model: str, usage: Usage | None, *, batch: bool = False) -> float | None:
        """USD for a call's usage (at the batch rates when `batch`); None: no price known."""
        price = self.prices.price(model, batch=batch)
        if price is None:
            with self._lock:
                self.unpriced.add(model)
            return None
        usage = usage or Usage()
        return price.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)

    @property
    def exhausted(self) -> bool:
        return self.max_cost is not None and self.spent >= self.max_cost

    def report(self) -> CostReport:
        """Cost figures for the JSON envelope and the summary line (None: no price known)."""
        known = not self.unpriced
        return CostReport(
            usd=round(self.spent, 6) if known else None,
            saved_usd=round(self.saved, 6) if known else None,
            max_cost=self.max_cost,
            unpriced_models=sorted(self.unpriced),
            prompt_cache_saved_usd=round(self.prompt_cache_saved, 6) if known else None,
            batch_saved_usd=round(self.batch_saved, 6)
            if known and self.batch_saved is not None
            else None,
        )
