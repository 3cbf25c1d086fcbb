#!/usr/bin/env python3
"""train.py — trains the default model: a small llama (RMSNorm, RoPE,
SwiGLU, tied embeddings) on the token streams prepare.py wrote, with
PyTorch on CUDA when there is a device, else on the CPU (Debian's
python3-torch will do; slowly).

  train.py --data DIR -o DIR [--steps N] [--dim D --layers L ...]

Writes DIR/weights.pt (the weights at the lowest validation loss, HF
layout: RoPE with rotate_half), DIR/final.pt (at the last step),
DIR/loss.csv (step, train loss, validation loss, seconds) and
DIR/config.json. Deterministic for a given --seed on one device.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare import Encoder, byte_chars  # noqa: E402  (the data's tokenizer, for the log's samples)


def load_ids(path):
    raw = open(path, "rb").read()
    return torch.tensor(struct.unpack(f"<{len(raw) // 2}H", raw), dtype=torch.long)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_tables(hd, ctx, base, device):
    inv = base ** (-torch.arange(0, hd // 2, dtype=torch.float64) * 2 / hd)
    ang = torch.arange(ctx, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], -1)
    return ang.cos().float().to(device), ang.sin().float().to(device)


def rope(x, cos, sin):  # x: [B, heads, T, hd]
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], -1)
    return x * cos + rot * sin


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["dim"], c["dim"] // c["heads"]
        self.h, self.kv, self.hd = c["heads"], c["kv_heads"], hd
        self.attn_norm = RMSNorm(d, c["eps"])
        self.wq = nn.Linear(d, self.h * hd, bias=False)
        self.wk = nn.Linear(d, self.kv * hd, bias=False)
        self.wv = nn.Linear(d, self.kv * hd, bias=False)
        self.wo = nn.Linear(self.h * hd, d, bias=False)
        self.ffn_norm = RMSNorm(d, c["eps"])
        self.gate = nn.Linear(d, c["ffn"], bias=False)
        self.up = nn.Linear(d, c["ffn"], bias=False)
        self.down = nn.Linear(c["ffn"], d, bias=False)
        self.drop = nn.Dropout(c["dropout"])

    def attend(self, q, k, v):
        if hasattr(F, "scaled_dot_product_attention"):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        T = q.shape[-2]
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        return torch.softmax(s.float(), -1).type_as(q) @ v

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        u = self.attn_norm(x)
        q = self.wq(u).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.wk(u).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.wv(u).view(B, T, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if self.kv != self.h:
            k = k.repeat_interleave(self.h // self.kv, dim=1)
            v = v.repeat_interleave(self.h // self.kv, dim=1)
        o = self.attend(q, k, v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.drop(self.wo(o))
        y = self.ffn_norm(x)
        return x + self.drop(self.down(F.silu(self.gate(y)) * self.up(y)))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.emb = nn.Embedding(c["n_vocab"], c["dim"])
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["dim"], c["eps"])
        nn.init.normal_(self.emb.weight, std=0.02)
        for n, p in self.named_parameters():
            if p.dim() == 2 and "emb" not in n:
                std = 0.02 / math.sqrt(2 * c["layers"]) if n.endswith(("wo.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx, cos, sin):
        x = self.emb(idx)
        T = idx.shape[1]
        for b in self.blocks:
            x = b(x, cos[:T], sin[:T])
        return self.norm(x) @ self.emb.weight.T  # tied output


SAMPLES = ["<|im_start|>user\nWhat is driftwood?<|im_end|>\n<|im_start|>assistant\n",
           "<|im_start|>user\nWrite a haiku about driftwood.<|im_end|>\n<|im_start|>assistant\n",
           "And the sea"]


@torch.no_grad()
def greedy(model, enc, tok, prompt, cos, sin, dev, n=60):
    """Greedy continuation of a prompt, for the log (a few dozen tokens;
    ends at an end token, which is shown)."""
    inv = {v: k for k, v in byte_chars().items()}
    stop = {tok["special"]["<|im_end|>"], tok["special"]["<|endoftext|>"]}
    ids = enc.encode(prompt)
    out = bytearray()
    for _ in range(n):
        t = int(model(torch.tensor([ids[-model.c["ctx"]:]], device=dev), cos, sin)[0, -1].argmax())
        if t in stop:
            return out.decode("utf-8", "replace") + tok["tokens"][t]
        ids.append(t)
        out += bytes(inv[ch] for ch in tok["tokens"][t])
    return out.decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=6)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--minutes", type=float, default=0,
                    help="fewer steps where --steps would take longer than this (timed over the first 20)")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    tok = json.load(open(os.path.join(a.data, "tokenizer.json")))
    train, val = load_ids(os.path.join(a.data, "train.bin")), load_ids(os.path.join(a.data, "val.bin"))
    c = dict(dim=a.dim, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads, ffn=a.ffn, ctx=a.ctx,
             n_vocab=len(tok["tokens"]), eps=1e-5, rope_base=10000.0, dropout=a.dropout)
    model = Llama(c).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    cos, sin = rope_tables(a.dim // a.heads, a.ctx, c["rope_base"], dev)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    other = [p for n, p in model.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    amp = dict(device_type="cuda", dtype=torch.bfloat16) if dev == "cuda" else None
    gen = torch.Generator().manual_seed(a.seed)

    def batch(src, n, g):
        i = torch.randint(0, len(src) - a.ctx - 1, (n,), generator=g)
        x = torch.stack([src[j:j + a.ctx + 1] for j in i.tolist()])
        return x[:, :-1].to(dev), x[:, 1:].to(dev)

    def loss_of(x, y):
        if amp:
            with torch.autocast(**amp):
                lg = model(x, cos, sin)
        else:
            lg = model(x, cos, sin)
        return F.cross_entropy(lg.float().reshape(-1, lg.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def evaluate():
        model.eval()
        g = torch.Generator().manual_seed(1234)  # the same windows every time
        tot = 0.0
        for _ in range(8):
            tot += loss_of(*batch(val, a.batch, g)).item()
        model.train()
        return tot / 8

    def save(name):
        torch.save({k: v.float().cpu() for k, v in model.state_dict().items()}, os.path.join(a.out, name))

    log = open(os.path.join(a.out, "loss.csv"), "w")
    log.write("step,train_loss,val_loss,seconds\n")
    best, t0, run = float("inf"), time.time(), []
    print(f"train.py: {n_params / 1e6:.2f} M parameters on {dev}; {len(train)} train / {len(val)} val tokens",
          flush=True)
    step = 0
    while step < a.steps:
        step += 1
        lr = a.lr * (step / a.warmup if step < a.warmup else
                     0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - a.warmup) / (a.steps - a.warmup))))
        for grp in opt.param_groups:
            grp["lr"] = lr
        loss = loss_of(*batch(train, a.batch, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run.append(loss.item())
        if step == 5:
            t5 = time.time()
        if step == 25 and a.minutes > 0:
            fit = int(a.minutes * 60 / ((time.time() - t5) / 20))
            if fit < a.steps:
                print(f"train.py: {a.steps} steps would take longer than {a.minutes} min: {fit} steps", flush=True)
                a.steps = max(fit, a.warmup + 1)
        if step % a.eval_every == 0 or step == a.steps:
            vl = evaluate()
            tl = sum(run) / len(run)
            run = []
            log.write(f"{step},{tl:.4f},{vl:.4f},{time.time() - t0:.1f}\n")
            log.flush()
            print(f"step {step}: train {tl:.3f} val {vl:.3f} (ppl {math.exp(vl):.1f}) {time.time() - t0:.0f} s",
                  flush=True)
            if vl < best:
                best = vl
                save("weights.pt")
    save("final.pt")
    # the samples come from the weights export.py takes: those of the lowest validation loss
    model.load_state_dict(torch.load(os.path.join(a.out, "weights.pt")))
    model.eval()
    enc = Encoder(tok["tokens"], tok["merges"])
    for prompt in SAMPLES:
        print("sample:", json.dumps(prompt), "->", json.dumps(greedy(model, enc, tok, prompt, cos, sin, dev)),
              flush=True)
    cfg = dict(c, params=n_params, steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed, device=dev,
               device_name=torch.cuda.get_device_name() if dev == "cuda" else "cpu",
               torch=torch.__version__, seconds=round(time.time() - t0, 1), best_val_loss=round(best, 4))
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=1)
    print(json.dumps(cfg))


if __name__ == "__main__":
    main()
