#!/usr/bin/env python3
"""llama_ref.py — an independent reference forward pass for the llama,
qwen2, qwen3, gemma2, gemma3 and phi3 architectures in PyTorch (float64),
written from the specs (../shared/specs/gguf-llama.md §4, architectures.md),
reading weights with tools/gguflib.py.

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


NEOX = ("qwen2", "qwen3", "gemma2", "gemma3", "phi3")


class Reference:
    """One model's float64 forward pass. Where the architectures differ
    (../shared/specs/architectures.md): per-head Q/K norms (qwen3, gemma3),
    post-norms, GELU, sqrt(dim) embeddings, soft-caps and sliding windows
    (gemma), fused Q/K/V and gate/up tensors (phi3), and RoPE scaling
    (linear, YaRN in the transformers formulation, LongRoPE factors,
    gemma3's local base). n_ctx is the session's context, which picks
    phi3's long or short factors."""

    def __init__(self, path, n_ctx=None):
        r = G.Reader(path)
        self.arch = a = r.get("general.architecture")
        g = lambda k, d=None: r.get(f"{a}.{k}", d)  # noqa: E731
        self.dim = g("embedding_length")
        self.n_layer = g("block_count")
        self.n_head = g("attention.head_count")
        self.n_kv = g("attention.head_count_kv", self.n_head)
        self.hd = g("attention.key_length", self.dim // self.n_head)
        self.n_rot = g("rope.dimension_count", self.hd)
        self.eps = g("attention.layer_norm_rms_epsilon")
        self.base = g("rope.freq_base", 10000.0)
        n_train = g("context_length")
        self.n_ctx = n_ctx or n_train
        self.orig_ctx = g("rope.scaling.original_context_length", n_train)
        kind = g("rope.scaling.type", "linear")
        factor = g("rope.scaling.factor", 0.0) or 1.0
        self.factor = 1.0 if kind == "none" else factor
        self.yarn = kind == "yarn"
        self.mag = g("rope.scaling.attn_factor", 1.0) * ((0.1 * math.log(self.factor) + 1) if self.yarn else 1.0)
        gemma = a.startswith("gemma")
        big = (a == "gemma2" and self.n_layer == 46) or (a == "gemma3" and self.n_layer == 62)
        self.scale = 1 / math.sqrt(self.dim / self.n_head if big else self.hd)
        self.attn_cap = g("attn_logit_softcapping", 50.0) if a == "gemma2" else 0.0
        self.final_cap = g("final_logit_softcapping", 30.0 if a == "gemma2" else 0.0) if gemma else 0.0
        swa = g("attention.sliding_window", 4096 if a == "gemma2" else 0)
        # the window of each layer, and whether it takes gemma3's local RoPE
        slides = {"gemma2": lambda i: i % 2 == 0, "gemma3": lambda i: i % 6 < 5}.get(a, lambda i: True)
        self.windows = [swa if slides(i) else 0 for i in range(self.n_layer)]
        self.local = [a == "gemma3" and w > 0 for w in self.windows]
        self.local_base = g("rope.freq_base_swa", 10000.0)
        self.gemma = gemma
        t = lambda n: torch.from_numpy(r.tensor(n)) if n in r.tensors else None  # noqa: E731
        self.emb = t("token_embd.weight")
        self.out = t("output.weight")
        if self.out is None:
            self.out = self.emb
        self.out_norm = t("output_norm.weight")
        self.freq_factors = t("rope_freqs.weight")
        if t("rope_factors_long.weight") is not None:
            self.freq_factors = t("rope_factors_long.weight" if self.n_ctx > self.orig_ctx else
                                  "rope_factors_short.weight")
        self.layers = []
        qd, kvd = self.n_head * self.hd, self.n_kv * self.hd
        for i in range(self.n_layer):
            p = f"blk.{i}."
            L = {k: t(p + k + ".weight") for k in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                  "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "attn_q_norm",
                                                  "attn_k_norm", "post_attention_norm", "post_ffw_norm")}
            qkv = t(p + "attn_qkv.weight")
            if qkv is not None:
                L["attn_q"], L["attn_k"], L["attn_v"] = qkv[:qd], qkv[qd:qd + kvd], qkv[qd + kvd:]
            if L["ffn_gate"] is None:  # phi3: gate rows, then up rows
                ff = L["ffn_up"].shape[0] // 2
                L["ffn_gate"], L["ffn_up"] = L["ffn_up"][:ff], L["ffn_up"][ff:]
            for k in ("attn_q", "attn_k", "attn_v", "attn_output"):
                L[k + ".bias"] = t(p + k + ".bias")
            if self.arch not in NEOX:  # back to HF layout
                L["attn_q"] = unpermute(L["attn_q"], self.n_head)
                L["attn_k"] = unpermute(L["attn_k"], self.n_kv)
                for k, nh in (("attn_q.bias", self.n_head), ("attn_k.bias", self.n_kv)):
                    if L[k] is not None:
                        L[k] = unpermute(L[k], nh)
            self.layers.append(L)

    def rms(self, x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * w

    def inv_freq(self, local):
        half = self.n_rot // 2
        i = torch.arange(0, half, dtype=torch.float64)
        if local:  # gemma3's sliding layers: their own base, no scaling
            return self.local_base ** (-i * 2 / self.n_rot)
        inv = self.base ** (-i * 2 / self.n_rot)
        if self.freq_factors is not None:
            inv = inv / self.freq_factors[:half].double()
        if not self.yarn:
            return inv / self.factor
        # YaRN: extrapolate the fast pairs, interpolate the slow ones, a
        # linear ramp between the correction dims of 32 and 1 rotations
        dim_of = lambda rot: self.n_rot * math.log(self.orig_ctx / (rot * 2 * math.pi)) / (2 * math.log(self.base))  # noqa
        lo, hi = max(math.floor(dim_of(32)), 0), min(math.ceil(dim_of(1)), self.n_rot - 1)
        ramp = ((i - lo) / max(hi - lo, 0.001)).clamp(0, 1)
        extrapolate = 1 - ramp
        return inv / self.factor * (1 - extrapolate) + inv * extrapolate

    def rope(self, x, pos, local):
        # x: [T, heads, hd]; HF rotate_half on the first n_rot dims
        half = self.n_rot // 2
        ang = pos[:, None].double() * self.inv_freq(local)[None, :]
        mag = 1.0 if local else self.mag
        cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None, :] * mag
        sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None, :] * mag
        xr, xp = x[..., :self.n_rot], x[..., self.n_rot:]
        rot = torch.cat([-xr[..., half:], xr[..., :half]], -1)
        return torch.cat([xr * cos + rot * sin, xp], -1)

    def logits(self, tokens):
        T = len(tokens)
        x = self.emb[torch.tensor(tokens)]
        if self.gemma:
            x = x * math.sqrt(self.dim)
        pos = torch.arange(T)
        g = self.n_head // self.n_kv
        act = (lambda v: torch.nn.functional.gelu(v, approximate="tanh")) if self.gemma else torch.nn.functional.silu
        for L, window, local in zip(self.layers, self.windows, self.local):
            allowed = pos[None, :] <= pos[:, None]
            if window:
                allowed &= pos[:, None] - pos[None, :] < window
            mask = torch.zeros((T, T), dtype=torch.float64).masked_fill(~allowed, -math.inf)
            u = self.rms(x, L["attn_norm"])
            lin = lambda name, v: v @ L[name].T + (L[name + ".bias"] if L.get(name + ".bias") is not None else 0)  # noqa
            q = lin("attn_q", u).view(T, self.n_head, self.hd)
            k = lin("attn_k", u).view(T, self.n_kv, self.hd)
            v = lin("attn_v", u).view(T, self.n_kv, self.hd)
            if L["attn_q_norm"] is not None:
                q, k = self.rms(q, L["attn_q_norm"]), self.rms(k, L["attn_k_norm"])
            q, k = self.rope(q, pos, local), self.rope(k, pos, local)
            k = k.repeat_interleave(g, dim=1)
            v = v.repeat_interleave(g, dim=1)
            s = torch.einsum("thd,shd->hts", q, k) * self.scale
            if self.attn_cap:
                s = self.attn_cap * torch.tanh(s / self.attn_cap)
            a = torch.softmax(s + mask, -1)
            o = lin("attn_output", torch.einsum("hts,shd->thd", a, v).reshape(T, -1))
            if L["post_attention_norm"] is not None:
                o = self.rms(o, L["post_attention_norm"])
            x = x + o
            y = self.rms(x, L["ffn_norm"])
            f = (act(y @ L["ffn_gate"].T) * (y @ L["ffn_up"].T)) @ L["ffn_down"].T
            if L["post_ffw_norm"] is not None:
                f = self.rms(f, L["post_ffw_norm"])
            x = x + f
        out = self.rms(x, self.out_norm) @ self.out.T
        if self.final_cap:
            out = self.final_cap * torch.tanh(out / self.final_cap)
        return out


if __name__ == "__main__":
    ref = Reference(sys.argv[1])
    lg = ref.logits([int(t) for t in sys.argv[2:]])
    print(lg[-1].argmax().item())
