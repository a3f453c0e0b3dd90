"""The context window of a request: the recipe's, the server's (llama.cpp /props), the table's."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
        if isinstance(n_ctx, int) and n_ctx > 0:
            return n_ctx, "the server's /props (llama.cpp n_ctx per slot)"
    listed = get_json("v1/models")
    cards = listed.get("data") if isinstance(listed, dict) else None
    for card in cards if isinstance(cards, list) else []:
        if not isinstance(card, dict) or (model and card.get("id") != model):
            continue
        size = card.get("max_model_len")
        if isinstance(size, int) and size > 0:
            return size, "the server's model list (max_model_len)"
    return None


def resolve_window(recipe: Recipe, model: str | None, client: ChatClient | None) -> tuple[int, str]:
    """The context window and where it came from: recipe/flag, server, built-in table."""
    if recipe.context_window:
        return recipe.context_window, "context_window"
    if client is not None and not client.endpoint.is_openai:
        probed = probe_context_window(client.get_json, model)
        if probed:
            return probed
    known = table_context_window(model)
    if known:
        return known, "the built-in table"
    return DEFAULT_CONTEXT_WINDOW, "the default for unknown models"
