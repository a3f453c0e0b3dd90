"""A local tokenizer's counts kept in the call cache by text hash, beside the server's
(`servercount`): a re-run whose every call is cached then reports its token counts without
loading tiktoken (about 0.2 s), and without counting anything again."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from ..errors import CacheError
from .servercount import CountStore, text_hash


def _key(encoding: str) -> str:
    return f"tiktoken:{encoding}"


def kept_counts(store: CountStore | None, encoding: str, texts: Sequence[str]) -> list[int] | None:
    """Every text's count under this encoding if the store has them all, else None."""
    if store is None or not texts:
        return None
    hashes = [text_hash(text) for text in texts]
    try:
        found = store.get_counts(_key(encoding), list(dict.fromkeys(hashes)))
    except CacheError:  # a broken cache only costs the counting
        return None
    if len(found) < len(set(hashes)):
        return None
    return [found[h] for h in hashes]


def keep_counts(
    store: CountStore | None, encoding: str, texts: Sequence[str], counts: Sequence[int]
) -> None:
    """Remember the texts' counts under this encoding (best effort)."""
    if store is None or not texts:
        return
    with contextlib.suppress(CacheError):  # it only costs counting again next time
        store.put_counts(_key(encoding), dict(zip(map(text_hash, texts), counts, strict=True)))
