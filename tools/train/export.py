#!/usr/bin/env python3
"""export.py — writes the trained model (train.py's weights, prepare.py's
vocabulary) as a llama GGUF with tools/gguflib.py: a byte-level BPE
vocabulary (GPT-2 pre-tokenizer), ChatML chat template, <|im_end|> as the
end of a turn and of generation.

  export.py --data DIR --run DIR [--weights weights.pt] [--type q8_0] -o MODEL.gguf

The Q/K rows are permuted from the HF rotate_half layout train.py uses to
the interleaved pairs of GGUF's llama RoPE, as llama.cpp's converter does
(tests/reference/llama_ref.py undoes it).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import gguflib as G  # noqa: E402
from mkmodel import TEMPLATES  # noqa: E402

def permute(w, n_head):
    """HF row h*hd + p*hd/2 + j -> GGUF row h*hd + 2j + p."""
    out = w.shape[0]
    hd = out // n_head
    return w.reshape(n_head, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(out, *w.shape[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepare.py's output (tokenizer.json, meta.json)")
    ap.add_argument("--run", required=True, help="train.py's output (config.json, weights)")
    ap.add_argument("--weights", default="weights.pt")
    ap.add_argument("--type", choices=G.TYPE_NAMES, default="q8_0")
    ap.add_argument("--name", default="driftwood-kjv")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    tok = json.load(open(os.path.join(a.data, "tokenizer.json")))
    c = json.load(open(os.path.join(a.run, "config.json")))
    sd = {k: v.numpy().astype(np.float32) for k, v in
          torch.load(os.path.join(a.run, a.weights), map_location="cpu").items()}
    tt = G.TYPE_NAMES[a.type]
    H, KV = c["heads"], c["kv_heads"]
    sp = tok["special"]
    n = len(tok["tokens"])
    types = [1] * n
    for i in sp.values():
        types[i] = 3  # control
    w = G.Writer(a.out)
    w.add("general.architecture", G.STRING, "llama")
    w.add("general.name", G.STRING, a.name)
    w.add("general.description", G.STRING,
          f"{c['params'] / 1e6:.1f} M parameter llama trained by tools/train on the King James Version "
          "of the Bible (public domain): Driftwood's default model")
    w.add("general.license", G.STRING, "CC0-1.0")
    G.add_llama_hparams(w, "llama", c["ctx"], c["dim"], c["layers"], c["ffn"], H, KV, c["rope_base"], c["eps"])
    w.add("tokenizer.ggml.model", G.STRING, "gpt2")
    w.add("tokenizer.ggml.pre", G.STRING, "gpt-2")
    w.add("tokenizer.ggml.tokens", G.ARRAY, tok["tokens"], G.STRING)
    w.add("tokenizer.ggml.token_type", G.ARRAY, types, G.I32)
    w.add("tokenizer.ggml.merges", G.ARRAY, tok["merges"], G.STRING)
    w.add("tokenizer.ggml.bos_token_id", G.U32, sp["<|endoftext|>"])
    w.add("tokenizer.ggml.eos_token_id", G.U32, sp["<|im_end|>"])
    w.add("tokenizer.ggml.eot_token_id", G.U32, sp["<|im_end|>"])
    w.add("tokenizer.ggml.padding_token_id", G.U32, sp["<|endoftext|>"])
    w.add("tokenizer.ggml.add_bos_token", G.BOOL, False)
    w.add("tokenizer.chat_template", G.STRING, TEMPLATES["chatml"])
    w.add_tensor("token_embd.weight", sd["emb.weight"], tt)
    w.add_tensor("output_norm.weight", sd["norm.weight"], G.T_F32)
    for i in range(c["layers"]):
        p, q = f"blk.{i}.", f"blocks.{i}."
        w.add_tensor(p + "attn_norm.weight", sd[q + "attn_norm.weight"], G.T_F32)
        w.add_tensor(p + "attn_q.weight", permute(sd[q + "wq.weight"], H), tt)
        w.add_tensor(p + "attn_k.weight", permute(sd[q + "wk.weight"], KV), tt)
        w.add_tensor(p + "attn_v.weight", sd[q + "wv.weight"], tt)
        w.add_tensor(p + "attn_output.weight", sd[q + "wo.weight"], tt)
        w.add_tensor(p + "ffn_norm.weight", sd[q + "ffn_norm.weight"], G.T_F32)
        w.add_tensor(p + "ffn_gate.weight", sd[q + "gate.weight"], tt)
        w.add_tensor(p + "ffn_up.weight", sd[q + "up.weight"], tt)
        w.add_tensor(p + "ffn_down.weight", sd[q + "down.weight"], tt)
    w.write()
    print(f"export.py: {a.out} ({os.path.getsize(a.out) / 1e6:.1f} MB, {a.type})")


if __name__ == "__main__":
    main()
