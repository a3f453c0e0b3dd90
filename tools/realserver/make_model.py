#!/usr/bin/env python3
"""Write a tiny, random-weight, llama-architecture GGUF model (no model hub).

Usage: make_model.py OUT.gguf [--allow-eos]   (needs gguf, tokenizers, numpy)

* Tokenizer: byte-level BPE (GPT-2 style, 4096 tokens) trained with `tokenizers`
  on the running interpreter's stdlib sources, so one Python version always
  gives the same tokenizer. Stored as tokenizer.ggml.model="gpt2",
  tokenizer.ggml.pre="gpt-2"; OUT's stem + ".tokenizer.json" is the same
  tokenizer in HF format (client-side token counts match the server's).
* Specials: <|endoftext|> (bos/pad), <|im_start|>, <|im_end|> (eos); a ChatML
  chat template is embedded (llama-server needs --jinja to use it).
* Weights: normal(0, 0.02), float32, seeded: 4 layers, embd 128, 4 heads /
  2 KV heads, FFN 352, ctx 4096 -> ~1.8 M params, ~7 MB.
* EOS is suppressed, so every completion runs to max_tokens (finish_reason
  "length") and is never empty: embedding dim 0 is a constant 1.0 that
  dominates the final RMSNorm, and the output rows of the special tokens are
  -5 there (logit ~ -50). --allow-eos drops that (then ~1 token in 1500 ends
  generation at random).
"""

import argparse
import glob
import json
import os
import sys
import sysconfig

import gguf
import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus_files(limit_bytes=8_000_000):
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")))
    files += sorted(glob.glob(os.path.join(stdlib, "*", "*.py")))
    out, total = [], 0
    for f in files:
        out.append(f)
        total += os.path.getsize(f)
        if total > limit_bytes:
            break
    return out


def train_tokenizer(vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train(
        corpus_files(),
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIALS,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ff", type=int, default=352)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--allow-eos", action="store_true")
    a = ap.parse_args()

    tok = train_tokenizer(a.vocab)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]  # token -> id
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    id2tok = [None] * len(vocab)
    for t, i in vocab.items():
        id2tok[i] = t
    assert None not in id2tok
    types = [gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in id2tok]

    stem = os.path.splitext(a.out)[0]
    tok.save(stem + ".tokenizer.json.part")
    os.replace(stem + ".tokenizer.json.part", stem + ".tokenizer.json")

    head_dim = a.embd // a.heads
    part = a.out + ".part"  # renamed at the end: an interrupted run leaves no model
    w = gguf.GGUFWriter(part, "llama")
    w.add_name("tiny-random-llama")
    w.add_context_length(a.ctx)
    w.add_embedding_length(a.embd)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.ff)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(id2tok))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(id2tok)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|endoftext|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_pad_token_id(vocab["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(CHATML)

    rng = np.random.default_rng(a.seed)

    def rnd(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    E, F, kv = a.embd, a.ff, a.kv_heads * head_dim
    tok_embd, out_w = rnd(len(id2tok), E), rnd(len(id2tok), E)
    if not a.allow_eos:
        tok_embd[:, 0] = 1.0
        out_w[:, 0] = 0.0
        out_w[[vocab[t] for t in SPECIALS], 0] = -5.0
    w.add_tensor("token_embd.weight", tok_embd)
    w.add_tensor("output_norm.weight", np.ones(E, np.float32))
    w.add_tensor("output.weight", out_w)
    for i in range(a.layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(E, np.float32))
        w.add_tensor(p + "attn_q.weight", rnd(E, E))
        w.add_tensor(p + "attn_k.weight", rnd(kv, E))
        w.add_tensor(p + "attn_v.weight", rnd(kv, E))
        w.add_tensor(p + "attn_output.weight", rnd(E, E))
        w.add_tensor(p + "ffn_norm.weight", np.ones(E, np.float32))
        w.add_tensor(p + "ffn_gate.weight", rnd(F, E))
        w.add_tensor(p + "ffn_up.weight", rnd(F, E))
        w.add_tensor(p + "ffn_down.weight", rnd(E, F))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(part, a.out)
    print(
        f"wrote {a.out}: vocab={len(id2tok)} merges={len(merges)} layers={a.layers} "
        f"embd={a.embd} size={os.path.getsize(a.out) / 1e6:.1f} MB",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
