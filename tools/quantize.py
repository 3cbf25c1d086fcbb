#!/usr/bin/env python3
"""quantize.py — re-quantises a GGUF model (F32/F16/BF16/Q8_0 or any type
we decode) into another weight type or into one of llama.cpp's per-tensor
mixes, so tests and benchmarks need no outside tool.

  tools/quantize.py IN.gguf OUT.gguf q4_k_m      # llama.cpp's Q4_K_M mix
  tools/quantize.py IN.gguf OUT.gguf q6_k --pure # every matrix Q6_K

Mixes: q2_k, q3_k_m, q4_k_m, q5_k_m, q6_k follow llama.cpp's rules for dense
llama/qwen2 models (../shared/specs/quants.md §7: output/tied embedding to
Q6_K, more bits for attn_v and ffn_down in the first, last and every third
layer, a row-length fallback when a row is not a multiple of 256). Plain
types (q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, q4_k, q5_k, q3_k,
f16, bf16, f32) put every matrix in that type except output (Q6_K, as
llama.cpp does; --pure keeps it too). 1-D tensors (norms, biases) keep
their type. The scale choice is simple (tools/gquants.py), not llama.cpp's
search, so the error is somewhat larger than its files' at the same size.
"""
import argparse
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguflib as G  # noqa: E402
import gquants as Q  # noqa: E402

T = dict(G.TYPE_NAMES)
# name -> (llama.cpp file type id, default tensor type)
FTYPES = {
    "f32": (0, "f32"), "f16": (1, "f16"), "bf16": (32, "bf16"), "q8_0": (7, "q8_0"), "q4_0": (2, "q4_0"),
    "q4_1": (3, "q4_1"), "q5_0": (8, "q5_0"), "q5_1": (9, "q5_1"), "iq4_nl": (25, "iq4_nl"),
    "iq4_xs": (30, "iq4_xs"), "q2_k": (10, "q2_k"), "q3_k_m": (12, "q3_k"), "q3_k": (12, "q3_k"),
    "q4_k_m": (15, "q4_k"), "q4_k": (15, "q4_k"), "q5_k_m": (17, "q5_k"), "q5_k": (17, "q5_k"), "q6_k": (18, "q6_k"),
}
MIXES = {"q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k"}
# when a row is not a multiple of the type's block (§7.3)
FALLBACK = {"q2_k": "iq4_nl", "q3_k": "iq4_nl", "iq4_xs": "iq4_nl", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}


def more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(name, ftype, base, n_layers, n_gqa, is_output, pure):
    """llama.cpp's choice for one matrix (dense llama-family models)."""
    if pure:
        return base
    if is_output:
        return "q8_0" if base == "q8_0" else "f32" if base == "f32" else "f16" if base in ("f16", "bf16") else "q6_k"
    if ftype not in MIXES:
        return base
    m = re.match(r"blk\.(\d+)\.(\w+)\.weight$", name)
    i, kind = (int(m.group(1)), m.group(2)) if m else (-1, "")
    if kind == "attn_v":
        if ftype == "q2_k":
            return "q4_k" if n_gqa >= 4 else "q3_k"
        if ftype == "q3_k_m":
            return "q5_k" if i < 2 else "q4_k"
        if ftype in ("q4_k_m", "q5_k_m"):
            return "q6_k" if more_bits(i, n_layers) else base
    if kind == "ffn_down":
        if ftype == "q2_k":
            return "q3_k"
        if ftype == "q3_k_m":
            return "q5_k" if i < n_layers // 16 else "q4_k"
        if ftype in ("q4_k_m", "q5_k_m"):
            return "q6_k" if more_bits(i, n_layers) else base
    if kind == "attn_output":
        return {"q2_k": "q3_k", "q3_k_m": "q4_k"}.get(ftype, base)
    if kind == "attn_qkv":  # phi3's fused Q/K/V
        return {"q3_k_m": "q4_k", "q4_k_m": "q5_k", "q5_k_m": "q6_k"}.get(ftype, base)
    return base


def fit(tname, ne0):
    """The row-length fallback: a type whose block divides ne0."""
    while tname in FALLBACK and ne0 % G.block_of(T[tname])[0]:
        tname = FALLBACK[tname]
    if ne0 % G.block_of(T[tname])[0]:
        tname = "f16"
    return tname


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("type", choices=sorted(FTYPES))
    ap.add_argument("--pure", action="store_true", help="every matrix, output included, in the type itself")
    a = ap.parse_args()
    if os.path.abspath(a.input) == os.path.abspath(a.output):
        sys.exit("quantize.py: output must differ from input")
    r = G.Reader(a.input)
    arch = r.get("general.architecture")
    n_layers = int(r.get(f"{arch}.block_count", 0))
    n_head, n_kv = r.get(f"{arch}.attention.head_count", 1), r.get(f"{arch}.attention.head_count_kv", 1)
    n_gqa = max(1, int(n_head) // max(1, int(n_kv)))
    ftype_id, base = FTYPES[a.type]
    w = G.Writer(a.output, alignment=int(r.get("general.alignment", 32)))
    for key, (vt, val, et) in r.kv.items():
        if key != "general.file_type":
            w.add(key, vt, val, et)
    w.add("general.file_type", G.U32, ftype_id)
    has_output = "output.weight" in r.tensors
    counts = {}
    for name, (ne, tt, raw) in r.tensors.items():
        quantise = name.endswith("weight") and len(ne) >= 2 and not name.endswith("_norm.weight")
        if not quantise:
            w.tensors.append((name, ne, tt, raw))
            continue
        is_output = name == "output.weight" or (name == "token_embd.weight" and not has_output)
        want = fit(tensor_type(name, a.type, base, n_layers, n_gqa, is_output, a.pure), ne[0])
        counts[want] = counts.get(want, 0) + 1
        if T[want] == tt:
            w.tensors.append((name, ne, tt, raw))
        else:
            w.add_tensor(name, r.tensor(name).astype(np.float32), T[want])
    w.write()
    print(f"{a.output}: {a.type}{' (pure)' if a.pure else ''}: "
          + ", ".join(f"{n} {k.upper()}" for k, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
