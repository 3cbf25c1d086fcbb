#!/usr/bin/env python3
"""llama_ref.py — an independent reference forward pass for the llama and
qwen2 architectures in PyTorch (float64), written from the spec
(../shared/specs/gguf-llama.md §4), reading weights with tools/gguflib.py.

It works on HF-style tensors: the GGUF llama Q/K rows (permuted by the
converter for the NORM RoPE pairing) are un-permuted back and RoPE is
applied with rotate_half (NEOX pairing), as transformers does. Agreement
with the engine therefore also checks the permutation argument of §4d.

  llama_ref.py MODEL.gguf TOKENS...        prints nothing; see compare()
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import gguflib as G  # noqa: E402


def unpermute(w, n_head):
    """Inverse of the converter's permute: GGUF row 2j <- HF row j and
    2j+1 <- HF row j + hd/2, per head."""
    out_dim = w.shape[0]
    hd = out_dim // n_head
    rest = w.shape[1:]
    return w.reshape(n_head, hd // 2, 2, *rest).transpose(1, 2).reshape(out_dim, *rest)


class Reference:
    def __init__(self, path):
        r = G.Reader(path)
        self.arch = r.get("general.architecture")
        a = self.arch
        self.dim = r.get(f"{a}.embedding_length")
        self.n_layer = r.get(f"{a}.block_count")
        self.n_head = r.get(f"{a}.attention.head_count")
        self.n_kv = r.get(f"{a}.attention.head_count_kv", self.n_head)
        self.hd = self.dim // self.n_head
        self.n_rot = r.get(f"{a}.rope.dimension_count", self.hd)
        self.eps = r.get(f"{a}.attention.layer_norm_rms_epsilon")
        self.base = r.get(f"{a}.rope.freq_base", 10000.0)
        t = lambda n: torch.from_numpy(r.tensor(n)) if n in r.tensors else None  # noqa: E731
        self.emb = t("token_embd.weight")
        self.out = t("output.weight")
        if self.out is None:
            self.out = self.emb
        self.out_norm = t("output_norm.weight")
        self.freq_factors = t("rope_freqs.weight")
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            L = {k: t(p + k + ".weight") for k in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                  "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
            for k in ("attn_q", "attn_k", "attn_v", "attn_output"):
                L[k + ".bias"] = t(p + k + ".bias")
            if self.arch == "llama":  # back to HF layout
                L["attn_q"] = unpermute(L["attn_q"], self.n_head)
                L["attn_k"] = unpermute(L["attn_k"], self.n_kv)
                for k, nh in (("attn_q.bias", self.n_head), ("attn_k.bias", self.n_kv)):
                    if L[k] is not None:
                        L[k] = unpermute(L[k], nh)
            self.layers.append(L)

    def rms(self, x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, pos):
        # x: [T, heads, hd]; HF rotate_half on the first n_rot dims
        half = self.n_rot // 2
        inv = self.base ** (-torch.arange(0, half, dtype=torch.float64) * 2 / self.n_rot)
        if self.freq_factors is not None:
            inv = inv / self.freq_factors[:half]
        ang = pos[:, None].double() * inv[None, :]
        cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None, :]
        sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None, :]
        xr, xp = x[..., :self.n_rot], x[..., self.n_rot:]
        rot = torch.cat([-xr[..., half:], xr[..., :half]], -1)
        return torch.cat([xr * cos + rot * sin, xp], -1)

    def logits(self, tokens):
        T = len(tokens)
        x = self.emb[torch.tensor(tokens)]
        pos = torch.arange(T)
        mask = torch.full((T, T), -math.inf, dtype=torch.float64).triu(1)
        g = self.n_head // self.n_kv
        for L in self.layers:
            u = self.rms(x, L["attn_norm"])
            lin = lambda name, v: v @ L[name].T + (L[name + ".bias"] if L.get(name + ".bias") is not None else 0)  # noqa
            q = lin("attn_q", u).view(T, self.n_head, self.hd)
            k = lin("attn_k", u).view(T, self.n_kv, self.hd)
            v = lin("attn_v", u).view(T, self.n_kv, self.hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            k = k.repeat_interleave(g, dim=1)
            v = v.repeat_interleave(g, dim=1)
            s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(self.hd) + mask
            a = torch.softmax(s, -1)
            o = torch.einsum("hts,shd->thd", a, v).reshape(T, -1)
            x = x + lin("attn_output", o)
            y = self.rms(x, L["ffn_norm"])
            f = (torch.nn.functional.silu(y @ L["ffn_gate"].T) * (y @ L["ffn_up"].T)) @ L["ffn_down"].T
            x = x + f
        return self.rms(x, self.out_norm) @ self.out.T


if __name__ == "__main__":
    ref = Reference(sys.argv[1])
    lg = ref.logits([int(t) for t in sys.argv[2:]])
    print(lg[-1].argmax().item())
