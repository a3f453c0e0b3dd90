"""The context window of a request: the recipe's, the server's (llama.cpp /props), the table's.

What a server says about a model (its window, whether and how it counts tokens) is asked once by
`server_facts` and kept in a `FactStore` (the call cache) for a day, so the dry run, the run and
a re-run plan from the same facts, and a re-run needs no server to plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from ..inputs.tokens import (
    ESTIMATE,
    CountStore,
    TokenCounter,
    for_model,
    get_counter,
    probe_tokenizer,
    server_counter,
)
from ..recipe.model import Recipe

if TYPE_CHECKING:
    from ..engine.client import ChatClient


#: Context windows of well-known model families (prefix match, longest first).
CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "gpt-5": 400_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4": 200_000,
    "claude": 200_000,
    "llama3": 8_192,
    "llama-3": 8_192,
    "qwen": 32_768,
    "mistral": 32_768,
}


DEFAULT_CONTEXT_WINDOW = 8_192


def context_window(model: str | None) -> int:
    """The context window for a model name from the built-in table (conservative default)."""
    return table_context_window(model) or DEFAULT_CONTEXT_WINDOW


def table_context_window(model: str | None) -> int | None:
    """The built-in table's context window for a model name, or None when it does not know it."""
    name = (model or "").lower().rsplit("/", 1)[-1]
    for prefix in sorted(CONTEXT_WINDOWS, key=len, reverse=True):
        if name.startswith(prefix):
            return CONTEXT_WINDOWS[prefix]
    return None


GetJson = Callable[[str], Any]


def probe_context_window(get_json: GetJson, model: str | None) -> tuple[int, str] | None:
    """The context window a server reports: llama.cpp `/props` (per slot), vLLM `max_model_len`."""
    props = get_json("props")
    if isinstance(props, dict):
        settings = props.get("default_generation_settings")
        n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        if _plausible(n_ctx):
            return n_ctx, "the server's /props (llama.cpp n_ctx per slot)"
    listed = get_json("v1/models")
    cards = listed.get("data") if isinstance(listed, dict) else None
    for card in cards if isinstance(cards, list) else []:
        if not isinstance(card, dict) or (model and card.get("id") != model):
            continue
        size = card.get("max_model_len")
        if _plausible(size):
            return size, "the server's model list (max_model_len)"
    return None


#: No model's window is larger; a server that says more is not believed (it would put a whole
#: tree in one request, to be refused and split over and over).
MAX_WINDOW = 10_000_000


def _plausible(window: Any) -> bool:
    return type(window) is int and 0 < window <= MAX_WINDOW


class FactStore(Protocol):
    """Where what endpoints said is kept between runs (the call cache: `engine.facts`)."""

    def get_fact(self, endpoint: str, model: str, kind: str) -> tuple[Any, float] | None: ...

    def put_fact(self, endpoint: str, model: str, kind: str, value: Any) -> None: ...


#: The kind of fact `server_facts` keeps per endpoint and model.
SERVER_FACTS = "server"


@dataclass(frozen=True)
class ServerFacts:
    """What an endpoint said about a model: its context window and how it counts tokens."""

    window: int | None = None
    window_source: str | None = None
    #: `inputs.tokens.probe_tokenizer`'s answer; None: the server does not count tokens.
    tokenizer: dict[str, Any] | None = None
    #: Whether the server answered at all (unreachable: nothing is known, nothing kept).
    answered: bool = True
    #: Seconds since the server said it, when it came from the store.
    age: float | None = None

    def describe(self) -> str:
        """Where the plan's window and counter came from, for the plan and the summary."""
        if not self.answered:
            return "the endpoint did not answer: planned locally"
        if self.age is not None:
            return f"remembered from the endpoint {_ago(self.age)} ago (--refresh asks again)"
        if self.tokenizer:
            return "asked the endpoint: the redacted text went to its tokenizer (no model call)"
        return "asked the endpoint for its window (it counts no tokens)"


def server_facts(
    client: ChatClient,
    model: str,
    *,
    store: FactStore | None = None,
    refresh: bool = False,
    count: bool = True,
) -> ServerFacts:
    """The endpoint's window and tokenizer for a model: from the store (a day), else asked
    (metadata only, never a chat) and kept; an endpoint that does not answer is not kept.

    Without `count` (a local --tokenizer) its tokenizer is not asked: no text is sent.
    """
    base = client.endpoint.base_url
    if store is not None and not refresh:
        kept = store.get_fact(base, model, SERVER_FACTS)
        known = kept is not None and isinstance(kept[0], dict)
        if kept is not None and known and (not count or "tokenizer" in kept[0]):
            value, when = kept
            return ServerFacts(
                window=value.get("window"),
                window_source=value.get("window_source"),
                tokenizer=value.get("tokenizer"),
                age=max(0.0, time.time() - when),
            )
    statuses: list[int | None] = []

    def get_json(path: str) -> Any:
        status, reply = client.metadata("GET", path)
        statuses.append(status)
        return reply

    def post_json(path: str, body: Mapping[str, Any]) -> Any:
        status, reply = client.metadata("POST", path, body)
        statuses.append(status)
        return reply

    probed = probe_context_window(get_json, model)
    tokenizer = probe_tokenizer(post_json, model) if count else None
    if not any(_settled(status) for status in statuses):
        return ServerFacts(answered=False)
    window, source = probed or (None, None)
    # A busy server (503 while llama.cpp loads its model, 429) may say more next time: kept
    # only what every probe answered for good, a 404 included ("there is no such thing").
    if store is not None and all(_settled(status) for status in statuses):
        value: dict[str, Any] = {"window": window, "window_source": source}
        store.put_fact(
            base, model, SERVER_FACTS, {**value, "tokenizer": tokenizer} if count else value
        )
    return ServerFacts(window, source, tokenizer)


#: Replies that say nothing lasting about the server: busy (it may say more next time), or the
#: key refused (a probe made with a wrong key must not hide the window once the key is fixed).
_PASSING = frozenset({401, 403, 407, 408, 425, 429})


def _settled(status: int | None) -> bool:
    """Whether a probe's reply is the server's lasting answer: a reply, not a passing status."""
    return status is not None and status < 500 and status not in _PASSING


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def resolve_window(
    recipe: Recipe,
    model: str | None,
    client: ChatClient | None,
    *,
    facts: ServerFacts | None = None,
) -> tuple[int, str]:
    """The context window and where it came from: recipe/flag, server, built-in table.

    With `facts` the server was asked already (or its answer is remembered): no request here.
    """
    if recipe.context_window:
        return recipe.context_window, "context_window"
    if facts is not None:
        if facts.window and facts.window_source:
            return facts.window, facts.window_source
    elif client is not None and not client.endpoint.is_openai:
        probed = probe_context_window(client.get_json, model)
        if probed:
            return probed
    known = table_context_window(model)
    if known:
        return known, "the built-in table"
    return DEFAULT_CONTEXT_WINDOW, "the default for unknown models"


def choose_counter(
    tokenizer: str | None,
    model: str | None,
    client: ChatClient | None,
    *,
    facts: ServerFacts | None = None,
    store: CountStore | None = None,
) -> TokenCounter:
    """The counter the recipe asks for; by default (and with `server`) the endpoint's own where
    it has one, else tiktoken, with a margin when that is not the model's own tokenizer.

    Without `client` (the local pass, or an endpoint that did not answer) it counts locally.
    """
    if tokenizer not in (None, "server"):
        return for_model(get_counter(model, tokenizer), model)
    known = facts.tokenizer if facts is not None else None
    if client is not None and not client.endpoint.is_openai and known:
        # The server counts, as it said: tiktoken (about 0.2 s to load) is not needed.
        return server_counter(
            client.post_json, fallback=ESTIMATE, model=model, tokenizer=known, store=store
        )
    fallback = for_model(get_counter(model), model)
    if client is None or client.endpoint.is_openai:
        if tokenizer == "server" and client is None:
            note = f"--tokenizer server needs the endpoint; counting with {fallback.name}"
            return replace(fallback, note=fallback.note or note)
        return fallback
    if facts is not None and not facts.tokenizer:
        if tokenizer != "server" or not facts.answered:
            return fallback
        note = (
            f"the server has no tokenize endpoint; counting with {fallback.name} instead "
            "(pass --tokenizer o200k, cl100k or estimate to choose)"
        )
        return replace(fallback, note=note)
    counter = server_counter(
        client.post_json, fallback=fallback, model=model, tokenizer=known, store=store
    )
    return counter if tokenizer == "server" or counter.name == "server" else fallback
