"""Token counting: tiktoken when its encoding can be loaded, else a calibrated estimate."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

#: Characters per token for the estimate; cl100k/o200k average about 3.7 on source code and prose.
CHARS_PER_TOKEN = 3.7

#: Model-name prefixes that use o200k_base; anything else falls back to cl100k_base.
O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of text; `name` says which counter runs (shown in plans and benchmarks)."""

    name: str
    count: Callable[[str], int]
    exact: bool


def estimate_tokens(text: str) -> int:
    """A cheap, deterministic token estimate used when no encoding is available."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


ESTIMATE = TokenCounter("estimate", estimate_tokens, exact=False)

_lock = threading.Lock()
_loaded: dict[str, TokenCounter] = {}


def encoding_for_model(model: str | None) -> str:
    """The tiktoken encoding name that matches a model name."""
    name = (model or "").lower().rsplit("/", 1)[-1]
    return "o200k_base" if name.startswith(O200K_PREFIXES) else "cl100k_base"


def get_counter(model: str | None = None, tokenizer: str | None = None) -> TokenCounter:
    """The best counter available offline for this model; never raises, never blocks on network."""
    if tokenizer == "estimate":
        return ESTIMATE
    encoding = {"o200k": "o200k_base", "cl100k": "cl100k_base"}.get(
        tokenizer or "", encoding_for_model(model)
    )
    with _lock:
        if encoding not in _loaded:
            _loaded[encoding] = _load_tiktoken(encoding)
        return _loaded[encoding]


def _load_tiktoken(encoding: str) -> TokenCounter:
    try:
        import tiktoken
        import tiktoken.load

        enc = tiktoken.get_encoding(encoding)
    except Exception:  # offline with no cache, or a broken cache: estimate instead
        return ESTIMATE

    def count(text: str) -> int:
        return len(enc.encode(text, disallowed_special=()))

    return TokenCounter(encoding, count, exact=True)


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
    name = (model or "").lower().rsplit("/", 1)[-1]
    for prefix in sorted(CONTEXT_WINDOWS, key=len, reverse=True):
        if name.startswith(prefix):
            return CONTEXT_WINDOWS[prefix]
    return DEFAULT_CONTEXT_WINDOW
