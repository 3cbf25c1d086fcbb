#!/usr/bin/env python3
"""mkmodel.py — writes GGUF test models: a chosen architecture and shape,
random weights of a chosen type, and a vocabulary copied from a GGUF file
(e.g. one of ../shared/fixtures/vocab/). Deterministic for a given --seed.

  tools/mkmodel.py --preset tiny --type q8_0 --vocab V.gguf -o out.gguf
  tools/mkmodel.py --arch qwen2 --dim 64 --layers 2 --heads 4 --kv-heads 2 \
                   --ffn 128 --type f16 --vocab V.gguf -o out.gguf

Presets: tiny (dim 64, 2 layers, 4/2 heads, ffn 192), 143m (dim 576,
30 layers, 9/3 heads, ffn 1536, tied), 1.1b (dim 2048, 16 layers, 32/8
heads, ffn 8192). Norm weights and biases are always F32, as llama.cpp
writes them.

Architectures (../shared/specs/architectures.md): llama, qwen2 (Q/K/V
biases), qwen3 (per-head Q/K norms), gemma2 (post-norms, soft-caps,
sliding window on even layers; always tied), gemma3 (Q/K norms, five
sliding layers in six with their own RoPE base), phi3 (fused attn_qkv and
gate+up in ffn_up). The options --head-dim, --rot, --swa, --yarn,
--longrope and the soft-caps write the keys and tensors llama.cpp's
converter writes for them.
"""
import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguflib as G  # noqa: E402

PRESETS = {
    "tiny": dict(dim=64, layers=2, heads=4, kv_heads=2, ffn=192, ctx=512, tied=False),
    "143m": dict(dim=576, layers=30, heads=9, kv_heads=3, ffn=1536, ctx=2048, tied=True),
    "1.1b": dict(dim=2048, layers=16, heads=32, kv_heads=8, ffn=8192, ctx=2048, tied=False),
}

TEMPLATES = {
    "llama2": "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"
              "{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}",
    "chatml": "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n'}}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "llama3": "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
              "m['content'] | trim + '<|eot_id|>' }}{% endfor %}",
}


def llama3_factors(base, n_rot, factor=8.0, lf=1.0, hf=4.0, orig=8192):
    out = []
    for i in range(n_rot // 2):
        wavelen = 2 * math.pi * base ** (2 * i / n_rot)
        if wavelen < orig / hf:
            out.append(1.0)
        elif wavelen > orig / lf:
            out.append(factor)
        else:
            s = (orig / wavelen - lf) / (hf - lf)
            out.append(1.0 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32)


def synthetic_vocab(kind):
    """A few hundred tokens: enough to tokenize English-ish text."""
    words = ["the", "he", "th", "a", "an", "and", "in", "on", "is", "it", "to", "of", "hello", "world"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    if kind == "spm":
        toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        types = [2, 3, 3] + [6] * 256
        normal = ["\u2581"] + letters + ["\u2581" + w for w in words] + words
        toks += normal
        types += [1] * len(normal)
        scores = [0.0] * 259 + [-float(i) for i in range(len(normal))]
        return {"tokenizer.ggml.model": (G.STRING, "llama", None),
                "tokenizer.ggml.tokens": (G.ARRAY, toks, G.STRING),
                "tokenizer.ggml.scores": (G.ARRAY, scores, G.F32),
                "tokenizer.ggml.token_type": (G.ARRAY, types, G.I32)}
    cp = G.byte_chars()
    toks = [cp[b] for b in range(256)]
    merges = []
    for w in words:
        g = "\u0120" + w
        cur = g[0]
        for ch in g[1:]:
            if cur + ch not in toks:
                merges.append(f"{cur} {ch}")
                toks.append(cur + ch)
            cur += ch
    toks.append("<|endoftext|>")
    types = [1] * (len(toks) - 1) + [3]
    return {"tokenizer.ggml.model": (G.STRING, "gpt2", None),
            "tokenizer.ggml.pre": (G.STRING, "gpt-2", None),
            "tokenizer.ggml.tokens": (G.ARRAY, toks, G.STRING),
            "tokenizer.ggml.token_type": (G.ARRAY, types, G.I32),
            "tokenizer.ggml.merges": (G.ARRAY, merges, G.STRING),
            "tokenizer.ggml.eos_token_id": (G.U32, len(toks) - 1, None)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--vocab", help="GGUF file whose tokenizer.* keys are copied")
    ap.add_argument("--synthetic-vocab", choices=["spm", "bpe"],
                    help="a small made-up vocabulary instead of --vocab (fuzz seeds, unit tests)")
    ap.add_argument("--preset", choices=PRESETS)
    ap.add_argument("--arch", choices=["llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"], default="llama")
    ap.add_argument("--head-dim", type=int, help="per-head size when not dim/heads (key_length, value_length)")
    ap.add_argument("--rot", type=int, help="rope.dimension_count: RoPE on the first ROT dims of each head")
    ap.add_argument("--swa", type=int, help="attention.sliding_window (gemma, phi3; llama: mistral-style)")
    ap.add_argument("--yarn", type=float, metavar="FACTOR", help="rope.scaling.type yarn with this factor")
    ap.add_argument("--orig-ctx", type=int, help="rope.scaling.original_context_length (yarn, longrope)")
    ap.add_argument("--longrope", action="store_true", help="phi3: rope_factors_short/long and attn_factor")
    ap.add_argument("--attn-softcap", type=float, help="gemma2.attn_logit_softcapping")
    ap.add_argument("--final-softcap", type=float, help="gemma2/gemma3.final_logit_softcapping")
    ap.add_argument("--dim", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--ffn", type=int)
    ap.add_argument("--ctx", type=int)
    ap.add_argument("--tied", action="store_true", default=None, help="no output.weight (reuse token_embd)")
    ap.add_argument("--type", choices=G.TYPE_NAMES, default="f16")
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--llama3-rope", action="store_true", help="write rope_freqs (Llama 3.1 scaling)")
    ap.add_argument("--chat-template", choices=list(TEMPLATES) + ["none"], default="none")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    cfg = dict(PRESETS.get(a.preset, PRESETS["tiny"]))
    for k in ("dim", "layers", "heads", "kv_heads", "ffn", "ctx", "tied"):
        v = getattr(a, k)
        if v is not None:
            cfg[k] = v
    dim, L, H, KV, FF = cfg["dim"], cfg["layers"], cfg["heads"], cfg["kv_heads"], cfg["ffn"]
    hd = a.head_dim or dim // H
    n_rot = a.rot or hd
    tt = G.TYPE_NAMES[a.type]
    arch = a.arch
    if arch.startswith("gemma"):
        cfg["tied"] = True  # gemma has no output tensor

    if not a.vocab and not a.synthetic_vocab:
        ap.error("one of --vocab or --synthetic-vocab is required")
    vocab_kv = synthetic_vocab(a.synthetic_vocab) if a.synthetic_vocab else G.Reader(a.vocab).kv
    n_vocab = len(vocab_kv["tokenizer.ggml.tokens"][1])
    w = G.Writer(a.out)
    w.add("general.architecture", G.STRING, arch)
    w.add("general.name", G.STRING, f"driftwood-test-{a.preset or 'custom'}-{a.type}")
    G.add_llama_hparams(w, arch, cfg["ctx"], dim, L, FF, H, KV, a.rope_base, head_dim=hd, n_rot=n_rot)
    if a.swa is not None:
        w.add(f"{arch}.attention.sliding_window", G.U32, a.swa)
    if a.yarn:
        w.add(f"{arch}.rope.scaling.type", G.STRING, "yarn")
        w.add(f"{arch}.rope.scaling.factor", G.F32, a.yarn)
    if a.orig_ctx:
        w.add(f"{arch}.rope.scaling.original_context_length", G.U32, a.orig_ctx)
    if a.longrope:
        s = cfg["ctx"] / (a.orig_ctx or cfg["ctx"])
        w.add(f"{arch}.rope.scaling.attn_factor", G.F32, math.sqrt(1 + math.log(s) / math.log(a.orig_ctx or cfg["ctx"])))
    for key, val in (("attn_logit_softcapping", a.attn_softcap), ("final_logit_softcapping", a.final_softcap)):
        if val is not None:
            w.add(f"{arch}.{key}", G.F32, val)
    for key, (vt, val, et) in vocab_kv.items():
        if key.startswith("tokenizer.") and key != "tokenizer.chat_template":
            w.add(key, vt, val, et)
    if a.chat_template != "none":
        w.add("tokenizer.chat_template", G.STRING, TEMPLATES[a.chat_template])

    rng = np.random.default_rng(a.seed)

    def mat(n_out, n_in, scale=None):
        s = scale if scale is not None else 1.0 / math.sqrt(n_in)
        return (rng.standard_normal((n_out, n_in), dtype=np.float32) * s).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    def bias(n):
        return (0.02 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    # gemma multiplies the embeddings by sqrt(dim): store them that much smaller
    w.add_tensor("token_embd.weight", mat(n_vocab, dim, 1 / math.sqrt(dim) if arch.startswith("gemma") else 1.0), tt)
    w.add_tensor("output_norm.weight", norm(dim), G.T_F32)
    if not cfg["tied"]:
        w.add_tensor("output.weight", mat(n_vocab, dim), tt)
    if a.llama3_rope:
        w.add_tensor("rope_freqs.weight", llama3_factors(a.rope_base, n_rot), G.T_F32)
    if a.longrope:  # per-pair divisors: near 1 for the short table, growing for the long one
        w.add_tensor("rope_factors_short.weight", (1 + 0.05 * rng.random(n_rot // 2)).astype(np.float32), G.T_F32)
        w.add_tensor("rope_factors_long.weight", np.linspace(1, 8, n_rot // 2, dtype=np.float32), G.T_F32)
    for i in range(L):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(dim), G.T_F32)
        if arch == "phi3":  # Q, K and V rows in one tensor
            w.add_tensor(p + "attn_qkv.weight", mat((H + 2 * KV) * hd, dim), tt)
        else:
            w.add_tensor(p + "attn_q.weight", mat(H * hd, dim), tt)
            w.add_tensor(p + "attn_k.weight", mat(KV * hd, dim), tt)
            w.add_tensor(p + "attn_v.weight", mat(KV * hd, dim), tt)
        if arch == "qwen2":
            w.add_tensor(p + "attn_q.bias", bias(H * hd), G.T_F32)
            w.add_tensor(p + "attn_k.bias", bias(KV * hd), G.T_F32)
            w.add_tensor(p + "attn_v.bias", bias(KV * hd), G.T_F32)
        if arch in ("qwen3", "gemma3"):
            w.add_tensor(p + "attn_q_norm.weight", norm(hd), G.T_F32)
            w.add_tensor(p + "attn_k_norm.weight", norm(hd), G.T_F32)
        w.add_tensor(p + "attn_output.weight", mat(dim, H * hd), tt)
        if arch.startswith("gemma"):
            w.add_tensor(p + "post_attention_norm.weight", norm(dim), G.T_F32)
        w.add_tensor(p + "ffn_norm.weight", norm(dim), G.T_F32)
        if arch == "phi3":  # gate rows, then up rows
            w.add_tensor(p + "ffn_up.weight", mat(2 * FF, dim), tt)
        else:
            w.add_tensor(p + "ffn_gate.weight", mat(FF, dim), tt)
            w.add_tensor(p + "ffn_up.weight", mat(FF, dim), tt)
        w.add_tensor(p + "ffn_down.weight", mat(dim, FF), tt)
        if arch.startswith("gemma"):
            w.add_tensor(p + "post_ffw_norm.weight", norm(dim), G.T_F32)
    w.write()


if __name__ == "__main__":
    main()
