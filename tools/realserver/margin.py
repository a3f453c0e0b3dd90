#!/usr/bin/env python3
"""Measure how far tiktoken's counts fall short of real models' tokenizers (the planning margin).

When parallelize cannot count with the model's own tokenizer it counts with tiktoken and keeps a
share of the context window free (`inputs.tokens.FOREIGN_MARGIN`). This script sizes that share:
it tokenizes the running interpreter's standard library sources with the real tokenizers that
llama.cpp vendors (`vendor/llama.cpp/models/ggml-vocab-*.gguf` in the llama-cpp-python sdist
that build.sh downloads: Llama 2/3, Qwen, Gemma, Phi-3, DeepSeek, ...) and prints, per vocab,
how many tokens it counts per tiktoken token (o200k and cl100k): over the whole corpus, at the
95th percentile and at worst per file (files of at least MIN_TOKENS tiktoken tokens: a chunk is
thousands of tokens, and tiny files' ratios are noise).

The counting is llama.cpp's own: each vocab's `tokenizer.*` metadata is copied into a tiny
random-weight model (the build's venv has `gguf`), served by the built `llama-server`, and asked
through `POST /tokenize`. Usage (after `make test-real` or build.sh):

    TIKTOKEN_CACHE_DIR=/work/shared/tiktoken-cache .venv/bin/python tools/realserver/margin.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve import cache_root, find_build, start_server  # noqa: E402  (a script beside serve.py)

#: Vocabs of embedding models (WordPiece): never served for chat, so not measured.
SKIPPED = ("bert-bge", "nomic-bert-moe")
#: Vocabularies no current chat model uses (GPT-2's does not merge runs of spaces): shown, but
#: left out of the margin.
OLD = ("gpt-2", "baichuan")
#: Files with fewer tiktoken tokens than this are left out of the per-file ratios.
MIN_TOKENS = 1_000
#: Corpus files larger than this are left out (data tables, not code).
MAX_FILE_BYTES = 256 * 1024
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def vocab_files(root: Path) -> list[Path]:
    """The sdist's ggml-vocab-*.gguf files, unpacked once into ROOT/vocab."""
    target = root / "vocab"
    if not any(target.glob("ggml-vocab-*.gguf")):
        target.mkdir(parents=True, exist_ok=True)
        sdist = next((root / "dl").glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = os.path.basename(member.name)
                vendored = "/vendor/llama.cpp/models/" in member.name
                if vendored and name.startswith("ggml-vocab-") and name.endswith(".gguf"):
                    member.name = name
                    tar.extract(member, target)
    found = sorted(target.glob("ggml-vocab-*.gguf"))
    return [p for p in found if not p.stem.endswith(SKIPPED)]


def make_model(vocab: Path, out: Path) -> None:
    """A tiny llama model with the vocab's tokenizer (run by the build venv, which has gguf)."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(vocab))
    size = len(reader.fields["tokenizer.ggml.tokens"].data)
    writer = gguf.GGUFWriter(str(out), "llama")
    embd, heads, ff = 8, 2, 16
    writer.add_context_length(4096)
    writer.add_embedding_length(embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(embd // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, field.contents())
        else:
            writer.add_key_value(name, field.contents(), kind)
    rng = np.random.default_rng(0)

    def rnd(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer.add_tensor("token_embd.weight", rnd(size, embd))
    writer.add_tensor("output_norm.weight", np.ones(embd, np.float32))
    writer.add_tensor("output.weight", rnd(size, embd))
    for weight, shape in {
        "attn_norm": (embd,),
        "attn_q": (embd, embd),
        "attn_k": (embd, embd),
        "attn_v": (embd, embd),
        "attn_output": (embd, embd),
        "ffn_norm": (embd,),
        "ffn_gate": (ff, embd),
        "ffn_up": (ff, embd),
        "ffn_down": (embd, ff),
    }.items():
        value = np.ones(shape, np.float32) if len(shape) == 1 else rnd(*shape)
        writer.add_tensor(f"blk.0.{weight}.weight", value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def corpus() -> dict[str, str]:
    """The standard library's .py sources (site-packages aside), by path relative to it."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = {}
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" in path.parts or path.stat().st_size > MAX_FILE_BYTES:
            continue
        try:
            texts[str(path.relative_to(stdlib))] = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return texts


def tokenize(url: str, text: str) -> int:
    body = json.dumps({"content": text}).encode()
    request = urllib.request.Request(f"{url}/tokenize", body, {"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=120) as reply:
        return len(json.loads(reply.read())["tokens"])


def measure(model: Path, texts: dict[str, str], binary: Path) -> dict[str, int]:
    """Token counts of every text by the model's tokenizer, through llama-server."""
    with (
        start_server(binary, model, slots=1, ctx_per_slot=256) as server,
        ThreadPoolExecutor(8) as pool,
    ):
        counts = pool.map(lambda t: tokenize(server.url, t), texts.values())
        return dict(zip(texts, counts, strict=True))


def ratios(theirs: dict[str, int], ours: dict[str, int]) -> tuple[float, float, float, str]:
    """Corpus ratio, 95th percentile and worst per-file ratio (with its file)."""
    total = sum(theirs.values()) / sum(ours.values())
    per_file = {p: theirs[p] / ours[p] for p in ours if ours[p] >= MIN_TOKENS}
    worst = max(per_file, key=per_file.__getitem__)
    p95 = statistics.quantiles(per_file.values(), n=20)[-1]
    return total, p95, per_file[worst], worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--make-model", nargs=2, metavar=("VOCAB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_model:
        make_model(Path(args.make_model[0]), Path(args.make_model[1]))
        return 0
    import tiktoken

    root = cache_root()
    build = find_build(root)
    if build is None:
        print("no build found: run tools/realserver/build.sh first", file=sys.stderr)
        return 1
    texts = corpus()
    local = {}
    for name in ("o200k_base", "cl100k_base"):
        encoding = tiktoken.get_encoding(name)
        local[name] = {p: len(encoding.encode_ordinary(t)) for p, t in texts.items()}
    print(f"corpus: {len(texts):,} stdlib .py files, {sum(map(len, texts.values())):,} chars")
    print(f"ratio = vocab tokens / tiktoken tokens; per file: files of >= {MIN_TOKENS:,} tokens")
    print(f"{'vocab':<16} {'vs':<7} {'corpus':>7} {'p95':>7} {'worst':>7}  worst file")
    venv_python = root / "venv" / "bin" / "python"
    worst_all = 0.0
    for vocab in vocab_files(root):
        model = root / "vocab" / f"tiny-{vocab.stem}.gguf"
        if not model.exists():
            subprocess.run(
                [str(venv_python), __file__, "--make-model", str(vocab), str(model)], check=True
            )
        try:
            theirs = measure(model, texts, build[0])
        except (RuntimeError, OSError) as exc:
            print(f"{vocab.stem[11:]:<16} failed: {str(exc).splitlines()[0]}")
            continue
        for name, ours in local.items():
            total, p95, worst, where = ratios(theirs, ours)
            family = vocab.stem[11:]
            if name == "cl100k_base" and family not in OLD:  # other models count with cl100k
                worst_all = max(worst_all, p95)
            print(f"{family:<16} {name[:6]:<7} {total:7.3f} {p95:7.3f} {worst:7.3f}  {where}")
    print(
        f"largest p95 ratio vs cl100k of current families (not {', '.join(OLD)}): "
        f"{worst_all:.3f} -> margin {1 - 1 / worst_all:.1%} of the window"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
