"""Token counts and context windows: the one source of truth for how big a request is.

A counter is tiktoken (o200k_base for current OpenAI model families, cl100k_base otherwise), an
OpenAI-compatible server's own tokenizer (llama.cpp `/tokenize`), or a calibrated estimate when
neither is available. Context windows come from the recipe, the server (llama.cpp `/props`, vLLM's
model list) or a built-in table by model name.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import string
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..defaults import default_cache_dir
from .servercount import CountStore, PostJson, ServerCounts, probe_tokenizer

TOKENIZERS = ("o200k", "cl100k", "estimate", "server")
ENCODINGS = {"o200k": "o200k_base", "cl100k": "cl100k_base"}

#: Model-name prefixes that use o200k_base; anything else falls back to cl100k_base.
O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")

#: Seconds a first-use download of an encoding may take before we estimate instead; a machine
#: with no network fails at once (DNS), one behind a silent firewall would otherwise hang.
DOWNLOAD_TIMEOUT = float(os.environ.get("PARALLELIZE_DOWNLOAD_TIMEOUT", "10"))
TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"

#: Chat framing per message (role and separators) and for the reply's priming, as OpenAI counts it.
MESSAGE_TOKENS = 4
REPLY_TOKENS = 3

# The estimate, calibrated on the Python 3.11 standard library (1,826 text files, 37 MB of code,
# reStructuredText, test data and certificates): a weighted least-squares fit of o200k_base and
# cl100k_base counts per file on the bytes of each class gave these tokens per byte (3.7
# characters per token overall, as a flat ratio would say). Its median error is 0% and 90% of
# files are within 19%, where a flat 3.7 characters per token is off by 38% at the 90th
# percentile: numbers cost far more than letters, indentation far less. Being unbiased, it is
# low for about half the files; the planner keeps ESTIMATE_MARGIN of the window free for that.
_PLAIN = string.ascii_letters + string.digits + string.whitespace
_BYTE_CLASSES = (
    (string.ascii_letters.encode(), 0.216),
    (string.digits.encode(), 0.77),
    (string.whitespace.encode(), 0.098),
    (bytes(b for b in range(128) if chr(b) not in _PLAIN), 0.60),  # punctuation, controls
)
_NON_ASCII_WEIGHT = 0.32
#: Share of a context window the planner keeps free when it counts with the estimate.
ESTIMATE_MARGIN = 0.15

# How many tokens real models' tokenizers count per tiktoken cl100k token (what a model that is
# not OpenAI's is counted with), measured with llama.cpp's own tokenizers on the Python 3.11
# standard library's .py sources (tools/realserver/margin.py: 1,783 files, 30 MB; per file: the
# files of at least 1,000 tokens; o200k counts about 2% fewer still):
#   vocab (families)                     corpus   p95    worst file
#   llama-bpe (Llama 3)                  1.000   1.000  1.000
#   qwen2, qwen35 (Qwen 2-3.5)           1.028   1.093  1.661
#   command-r, starcoder, refact         1.140   1.249  1.702
#   gemma-4 (Gemma)                      1.226   1.341  1.750
#   deepseek-llm / deepseek-coder        1.257   1.374  1.764 / 1.337 1.455 1.808
#   falcon, mpt, aquila, gpt-neox        1.231-1.313  1.341-1.444  1.469-1.555
#   llama-spm, phi-3 (Llama 2, Mistral)  1.347   1.474  1.819
#   gpt-2, baichuan (old)                1.986-2.121  2.438-2.555  2.912-2.945
# FOREIGN_RATIO covers the 95th percentile of every current family (SentencePiece Llama 2 and
# Phi-3 at 1.474). The rare file past it (long runs of digits, which those vocabularies split
# one by one) and the old GPT-2 and Baichuan vocabularies still end in the server's "exceeds the
# context" error naming the chunk: there, --tokenizer server (if it counts) or --context-window.
FOREIGN_RATIO = 1.5


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate from byte classes; linear, so it adds up over pieces."""
    if not text:
        return 0
    data = text.encode("utf-8", "surrogatepass")
    size = len(data)
    total, seen = 0.0, 0
    for chars, weight in _BYTE_CLASSES:
        n = size - len(data.translate(None, chars))
        total += weight * n
        seen += n
    total += _NON_ASCII_WEIGHT * (size - seen)
    return math.ceil(total)


Messages = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens; `name` says which counter runs (shown in plans, summaries and benchmarks)."""

    name: str
    count: Callable[[str], int]
    exact: bool
    #: count(a + b) == count(a) + count(b) whenever b starts a line that is not blank and does not
    #: start with "/" (see `is_safe_cut`), so a long text can be counted in pieces.
    additive: bool = False
    #: Why this is not the counter that was asked for; announced once per run.
    note: str | None = None
    #: Tokens of a whole chat request, when the server can render its own chat template.
    render: Callable[[Messages], int] | None = None
    #: Share of the context window the planner keeps free: counts that may fall short of the
    #: model's (the estimate; tiktoken for a model that is not OpenAI's). 0: the model's own.
    margin: float = 0.0
    #: Counts of many texts at once (the server: concurrent requests, cached counts first).
    count_many: Callable[[Sequence[str]], list[int]] | None = None

    def request_tokens(self, messages: Messages) -> int:
        """Tokens a chat request takes in the context window, framing included."""
        if self.render is not None:
            return self.render(messages)
        body = sum(self.count(str(m.get("content") or "")) + MESSAGE_TOKENS for m in messages)
        return body + REPLY_TOKENS


ESTIMATE = TokenCounter(
    "estimate", estimate_tokens, exact=False, additive=True, margin=ESTIMATE_MARGIN
)


def is_openai_model(model: str | None) -> bool:
    """Whether tiktoken is this model's own tokenizer (OpenAI's model families)."""
    name = (model or "").lower().rsplit("/", 1)[-1]
    return name.startswith((*O200K_PREFIXES, "gpt-4", "gpt-3.5", "gpt-35"))


def for_model(counter: TokenCounter, model: str | None) -> TokenCounter:
    """The counter with the margin it needs for this model: tiktoken and the estimate are
    OpenAI's tokenizers (or close to them), so other models' counts may be higher."""
    if counter.name == "server" or counter.name == BYTES_BOUND.name or is_openai_model(model):
        return counter
    margin = 1 - (1 - counter.margin) / FOREIGN_RATIO
    return replace(counter, margin=round(margin, 3))


def utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


#: Every token of a byte-level BPE tokenizer stands for at least one byte of text, so a text's
#: UTF-8 length bounds its token count from above: enough to prove that small files fit the
#: context window without loading a tokenizer (about 0.15 s of start-up).
BYTES_BOUND = TokenCounter("utf-8 bytes", utf8_bytes, exact=True, additive=True)

# Why pieces cut at a "safe" line start add up exactly, for both tiktoken encodings: tiktoken
# first splits text with a regex and then encodes each piece on its own. The only regex pieces
# that may contain a newline are runs of whitespace (`\s*[\r\n]+`, `\s+(?!\S)`, `\s++$`) and
# punctuation followed by newlines (`[^\s\p{L}\p{N}]+[\r\n]*`, in o200k `[\r\n/]*`). Whitespace
# joins the newlines before it, never the indentation after it. So when the next line is not
# blank and does not start with "/", every such piece ends right at the line start, the regex
# (which never looks behind) restarts there in both cases, and the counts add up. A property test
# checks this against both real encodings; the standard library's 16,000 random cuts all agreed.
_SAFE_CUT = re.compile(r"\n(?=[^\s/]|[ \t]+\S)")
#: Safe cuts after a blank line: a top-level block starts at column 0, a nested one indented.
_TOP_CUT = re.compile(r"\n[ \t]*\n(?=[^\s/])")
_BLOCK_CUT = re.compile(r"\n[ \t]*\n(?=[ \t]+\S)")


def is_safe_cut(text: str, offset: int) -> bool:
    """Whether counts of text[:offset] and text[offset:] add up (see above)."""
    return (
        0 < offset < len(text)
        and text[offset - 1] == "\n"
        and _SAFE_CUT.match(text, offset - 1) is not None
    )


#: Texts longer than this are counted in segments (in parallel) cut at safe line starts.
SEGMENT_THRESHOLD = 16 * 1024
#: A segment ends at the first strong cut after this many characters...
SEGMENT_MIN_CHARS = 2 * 1024
#: ...or at the first safe cut after this many, when no strong cut came.
SEGMENT_MAX_CHARS = 16 * 1024


def segment_offsets(text: str) -> list[int]:
    """End offsets of the segments a long text is counted in (the last is len(text)).

    Segments end at safe cuts, preferably where a top-level block starts, else after a blank line,
    so that the splitter finds most natural boundaries with exact counts already known.
    """
    size = len(text)
    ends: list[int] = []
    start = 0
    while size - start > max(SEGMENT_MAX_CHARS, SEGMENT_THRESHOLD if not ends else 0):
        low, high = start + SEGMENT_MIN_CHARS, start + SEGMENT_MAX_CHARS
        found = (
            _TOP_CUT.search(text, low - 1, high + 1)
            or _BLOCK_CUT.search(text, low - 1, high + 1)
            or _SAFE_CUT.search(text, low - 1)
        )
        if found is None or size - found.end() < SEGMENT_MIN_CHARS:
            break
        start = found.end()
        ends.append(start)
    ends.append(size)
    return ends


def safe_cuts(text: str, start: int, end: int, every: int) -> list[int]:
    """Safe cuts (`is_safe_cut`) in text[start:end], the first one after `every` characters and
    each next one at least `every` after the last, none within `every` // 2 of the end."""
    cuts: list[int] = []
    pos = start + every
    while pos < end - every // 2:
        found = _SAFE_CUT.search(text, pos - 1, end)
        if found is None or found.end() >= end - every // 2:
            break
        cuts.append(found.end())
        pos = found.end() + every
    return cuts


def sums_exactly(counter: TokenCounter) -> bool:
    """Whether the counter's counts of texts cut at safe cuts add up exactly to the whole's
    (tiktoken, the byte bound; not the estimate, which rounds each count up)."""
    return counter.exact and counter.additive and counter.render is None


def local_encoding(model: str | None, tokenizer: str | None = None) -> str | None:
    """The tiktoken encoding `get_counter` loads for these (None: it estimates)."""
    if tokenizer == "estimate":
        return None
    return ENCODINGS.get(tokenizer or "", encoding_for_model(model))


def lazy_counter(model: str | None, tokenizer: str | None = None) -> TokenCounter:
    """tiktoken's counter for these, loaded when it first counts: a plan whose counts are all
    known (`inputs.keptcounts`) needs no encoder (loading one takes about 0.2 s)."""
    encoding = local_encoding(model, tokenizer)
    if encoding is None:
        return ESTIMATE
    return TokenCounter(
        encoding, lambda text: get_counter(model, tokenizer).count(text), exact=True, additive=True
    )


def encoding_for_model(model: str | None) -> str:
    """The tiktoken encoding name that matches a model name."""
    name = (model or "").lower().rsplit("/", 1)[-1]
    return "o200k_base" if name.startswith(O200K_PREFIXES) else "cl100k_base"


#: Special tokens are counted as the ordinary text they are made of (what `encode_ordinary` does).
_NO_SPECIAL: frozenset[str] = frozenset()
_lock = threading.Lock()
_loaded: dict[tuple[str, str | None], TokenCounter] = {}


def get_counter(
    model: str | None = None,
    tokenizer: str | None = None,
    *,
    download_timeout: float | None = None,
) -> TokenCounter:
    """The best local counter for this model; never raises, never hangs on the network.

    `tokenizer` is one of TOKENIZERS; "server" is handled by `server_counter`, here it means the
    model's tiktoken encoding (what a server without a tokenize endpoint falls back to).
    """
    if tokenizer == "estimate":
        return ESTIMATE
    encoding = ENCODINGS.get(tokenizer or "", encoding_for_model(model))
    key = (encoding, os.environ.get("TIKTOKEN_CACHE_DIR"))
    with _lock:
        if key not in _loaded:
            timeout = DOWNLOAD_TIMEOUT if download_timeout is None else download_timeout
            _loaded[key] = _load_tiktoken(encoding, timeout)
        return _loaded[key]


def _load_tiktoken(encoding: str, timeout: float) -> TokenCounter:
    """tiktoken's encoding, loaded off the registry lock so that a hung download cannot block."""
    box: dict[str, Any] = {}

    def load() -> None:
        try:
            import tiktoken

            spec = _encoding_params(encoding)
            box["encoders"] = _Encoders(
                tiktoken.Encoding(**spec), lambda: tiktoken.Encoding(**spec)
            )
        except Exception as exc:  # offline with no cache, a proxy error, a corrupt cache file
            box["error"] = f"{type(exc).__name__}"

    if _is_cached(encoding):
        load()  # reading the cache needs no network: no timeout, however slow the disk
    else:
        thread = threading.Thread(target=load, name=f"tiktoken-{encoding}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            box["error"] = f"download timed out after {timeout:g}s"
    encoders = box.get("encoders")
    if encoders is None:
        note = (
            f"token counts are estimates: the {encoding} encoding is not cached and could not be "
            f"downloaded ({box.get('error', 'unknown error')}); connect once, or set "
            "TIKTOKEN_CACHE_DIR to a directory that holds it"
        )
        return replace(ESTIMATE, note=note)
    return TokenCounter(encoding, encoders.count, exact=True, additive=True)


#: Counting threads share one encoder until this much text was counted; then up to
#: MAX_ENCODERS are built, one per thread at a time. Two threads sharing one encoder counted the
#: standard library at about the speed of one thread, two with their own 1.4x faster; building
#: one more costs about 0.25 s, which pays off only on large inputs.
OWN_ENCODER_AFTER_CHARS = 4_000_000
MAX_ENCODERS = max(1, min(4, os.cpu_count() or 1))


class _Encoders:
    """The tiktoken encoders of one encoding, lent to counting threads."""

    def __init__(self, first: Any, build: Callable[[], Any]) -> None:
        self._first = first
        self._idle = [first]
        self._build = build
        self._made = 1
        self._counted = 0
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        """Tokens of text, as encode_ordinary counts them."""
        encoder = self._take(len(text))
        try:
            return _tokens(encoder or self._first, text)
        finally:
            if encoder is not None:
                with self._lock:
                    self._idle.append(encoder)

    def _take(self, size: int) -> Any:
        """An encoder for this thread alone, or None to share the first one."""
        with self._lock:
            self._counted += size
            if self._idle:
                return self._idle.pop()
            if self._counted < OWN_ENCODER_AFTER_CHARS or self._made >= MAX_ENCODERS:
                return None
            self._made += 1
        return self._build()


def _tokens(encoder: Any, text: str) -> int:
    # The buffer form returns packed uint32 tokens instead of a list of ints built under the GIL
    # (a private but long-standing method; the public list API is the fallback).
    to_buffer = getattr(getattr(encoder, "_core_bpe", None), "encode_to_tiktoken_buffer", None)
    try:
        if to_buffer is not None:
            return memoryview(to_buffer(text, _NO_SPECIAL)).nbytes // 4
        return len(encoder.encode_ordinary(text))
    except UnicodeEncodeError:  # lone surrogates (from stdin): count what would be sent
        return _tokens(encoder, text.encode("utf-8", "replace").decode("utf-8"))


def _encoding_params(encoding: str) -> dict[str, Any]:
    """tiktoken's constructor arguments, from our marshal copy when there is one.

    Parsing the base64 BPE file takes about 0.3 s of every run's start-up; the marshal copy
    (Python-version specific, made once in the cache directory) loads in about 0.05 s.
    """
    import marshal
    import sys

    import tiktoken
    from tiktoken_ext.openai_public import ENCODING_CONSTRUCTORS

    version = f"{tiktoken.__version__}-py{sys.version_info[0]}{sys.version_info[1]}"
    copy = default_cache_dir() / f"tiktoken-{encoding}-{version}.marshal"
    try:
        params = marshal.loads(copy.read_bytes())
        if isinstance(params, dict) and set(params) == _ENCODING_KEYS:
            return params
    except (OSError, ValueError, EOFError, TypeError):
        pass
    params = ENCODING_CONSTRUCTORS[encoding]()
    try:  # best effort: a read-only cache directory only costs the faster start next time
        copy.parent.mkdir(parents=True, exist_ok=True)
        temp = copy.with_name(f"{copy.name}.{os.getpid()}.tmp")
        temp.write_bytes(marshal.dumps(params))
        temp.replace(copy)
    except (OSError, ValueError):
        pass
    return params


_ENCODING_KEYS = {"name", "pat_str", "mergeable_ranks", "special_tokens"}


def _is_cached(encoding: str) -> bool:
    """Whether tiktoken would find the encoding in its cache (the same path it computes)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        import tempfile

        cache = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache:
        return False
    key = hashlib.sha1(TIKTOKEN_URL.format(name=encoding).encode()).hexdigest()
    return os.path.exists(os.path.join(cache, key))


def server_counter(
    post_json: PostJson,
    *,
    fallback: TokenCounter,
    model: str | None = None,
    tokenizer: Mapping[str, Any] | None = None,
    store: CountStore | None = None,
) -> TokenCounter:
    """Count with the server's own tokenizer, else `fallback` (with a note).

    `tokenizer` is what `probe_tokenizer` found (probed here when not given); counts are looked
    up in, and added to, `store` under its fingerprint, so counting a text again needs no server.
    """
    found = tokenizer if tokenizer is not None else probe_tokenizer(post_json, model)
    if not found:
        note = (
            f"the server has no tokenize endpoint; counting with {fallback.name} instead "
            "(pass --tokenizer o200k, cl100k or estimate to choose)"
        )
        return replace(fallback, note=note)
    counts = ServerCounts(post_json, found, model, store)
    render = counts.render if counts.template else None
    return TokenCounter(
        "server", counts.count, exact=True, render=render, count_many=counts.count_many
    )
