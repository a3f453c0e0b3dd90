"""Counting with the endpoint's own tokenizer: llama.cpp `/tokenize` + `/apply-template`, vLLM
`/tokenize`. Many texts are counted at once (concurrent requests), and every count is kept by
text hash, in memory and in a `CountStore` (the call cache), so a text is asked for once.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from ..errors import CacheError, EndpointError

Messages = Sequence[Mapping[str, Any]]
PostJson = Callable[[str, Mapping[str, Any]], Any]

#: Concurrent /tokenize requests when counting many texts (llama.cpp answers them on its HTTP
#: threads, outside the model's slots; vLLM on its event loop).
SERVER_COUNT_WORKERS = 8
#: What the tokenizer fingerprint is taken of: code, digits, non-ASCII, and a chat turn.
PROBE_TEXT = "def count(x):\n    return x + 1_000_000  # héllo, 世界 🙂\n"
PROBE_MESSAGES = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"})


class CountStore(Protocol):
    """Where a server's counts are kept between runs (the call cache), by text hash."""

    def get_counts(self, tokenizer: str, hashes: Sequence[str]) -> dict[str, int]: ...

    def put_counts(self, tokenizer: str, counts: Mapping[str, int]) -> None: ...


def text_hash(text: str) -> str:
    """The key of a text's count: a hash, never the text."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def probe_tokenizer(post_json: PostJson, model: str | None) -> dict[str, Any] | None:
    """How the server counts tokens, or None: llama.cpp (`/tokenize` + `/apply-template`) or
    vLLM (`/tokenize` with a prompt or messages), and a fingerprint of its tokenizer and chat
    template (the hash of their answers on a fixed text), which names its counts in the cache."""
    for dialect in ("llama", "vllm"):
        tokens = _tokenize(post_json, dialect, model, PROBE_TEXT)
        if tokens is None:
            continue
        chat = _chat(post_json, dialect, model, PROBE_MESSAGES)
        seen = json.dumps([dialect, model if dialect == "vllm" else None, tokens, chat])
        return {"dialect": dialect, "template": chat is not None, "fingerprint": text_hash(seen)}
    return None


def _tokenize(post_json: PostJson, dialect: str, model: str | None, text: str) -> Any:
    """The server's tokens of a text (a list), or None when it does not answer so."""
    if dialect == "llama":
        reply = post_json("tokenize", {"content": text})
    else:
        reply = post_json("tokenize", {"model": model, "prompt": text, "add_special_tokens": False})
    tokens = reply.get("tokens") if isinstance(reply, dict) else None
    return tokens if isinstance(tokens, list) else None


def _chat(post_json: PostJson, dialect: str, model: str | None, messages: Messages) -> Any:
    """The server's rendering of a chat (llama.cpp: the prompt; vLLM: its tokens), or None."""
    turns = [dict(m) for m in messages]
    if dialect == "llama":
        reply = post_json("apply-template", {"messages": turns})
        prompt = reply.get("prompt") if isinstance(reply, dict) else None
        return prompt if isinstance(prompt, str) else None
    body = {"model": model, "messages": turns, "add_generation_prompt": True}
    reply = post_json("tokenize", body)
    tokens = reply.get("tokens") if isinstance(reply, dict) else None
    return tokens if isinstance(tokens, list) else None


class ServerCounts:
    """One server tokenizer's counts: remembered in memory and in the store, many at once."""

    def __init__(
        self,
        post_json: PostJson,
        found: Mapping[str, Any],
        model: str | None,
        store: CountStore | None,
    ) -> None:
        self._post = post_json
        self._dialect = str(found["dialect"])
        self.template = bool(found.get("template"))
        self._model = model
        self._key = f"{self._dialect}:{found['fingerprint']}"
        self._store = store
        self._known: dict[str, int] = {}
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        return self.count_many([text])[0] if text else 0

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Counts of texts: known ones first, the rest asked concurrently, then kept."""
        keys = [text_hash(t) for t in texts]
        with self._lock:
            missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._known}
        if missing and self._store is not None:
            self._remember(self._stored(list(missing)), store=False)
            with self._lock:
                missing = {k: t for k, t in missing.items() if k not in self._known}
        if missing:
            items = list(missing.items())
            workers = min(SERVER_COUNT_WORKERS, len(items))
            if workers == 1:
                counts = [self._ask(items[0][1])]
            else:
                with ThreadPoolExecutor(workers, thread_name_prefix="parallelize-tokenize") as pool:
                    counts = list(pool.map(self._ask, (t for _, t in items)))
            self._remember(dict(zip((k for k, _ in items), counts, strict=True)), store=True)
        with self._lock:
            return [self._known[k] if t else 0 for k, t in zip(keys, texts, strict=True)]

    def render(self, messages: Messages) -> int:
        """Tokens of a chat request as the server's chat template renders it."""
        turns = [dict(m) for m in messages]
        key = text_hash("chat\0" + json.dumps(turns, sort_keys=True))
        with self._lock:
            known = self._known.get(key)
        if known is None and self._store is not None:
            known = self._stored([key]).get(key)
        if known is None:
            chat = _chat(self._post, self._dialect, self._model, turns)
            if chat is None:
                raise EndpointError("the server's chat template endpoint stopped answering")
            known = self.count(chat) if isinstance(chat, str) else len(chat)
        self._remember({key: known}, store=True)
        return known

    def _ask(self, text: str) -> int:
        tokens = _tokenize(self._post, self._dialect, self._model, text)
        if tokens is None:
            raise EndpointError(
                "the server's tokenize endpoint stopped answering",
                hint="re-run, or pass --tokenizer o200k, cl100k or estimate to count locally",
            )
        return len(tokens)

    def _stored(self, keys: list[str]) -> dict[str, int]:
        try:
            return self._store.get_counts(self._key, keys) if self._store else {}
        except CacheError:  # a closed or broken cache only costs requests
            self._store = None
            return {}

    def _remember(self, counts: Mapping[str, int], *, store: bool) -> None:
        with self._lock:
            self._known.update(counts)
        if store and counts and self._store is not None:
            try:
                self._store.put_counts(self._key, counts)
            except CacheError:
                self._store = None
