#!/usr/bin/env python3
"""perplexity.py — held-out perplexity of a GGUF model on prepare.py's
val.bin, computed by the float64 PyTorch reference forward pass
(tests/reference/llama_ref.py) on the file's dequantised weights: an
independent check of what train.py reported, for the shipped file itself.

  perplexity.py MODEL.gguf DIR/val.bin [--window 1024] [--max-windows N]

Non-overlapping windows; every token after a window's first is scored.
"""
import argparse
import math
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "reference"))
from llama_ref import Reference  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("val")
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--max-windows", type=int, default=0)
    a = ap.parse_args()
    raw = open(a.val, "rb").read()
    ids = list(struct.unpack(f"<{len(raw) // 2}H", raw))
    ref = Reference(a.model)
    nll, n = 0.0, 0
    starts = range(0, len(ids) - 1, a.window)
    if a.max_windows:
        starts = list(starts)[:a.max_windows]
    with torch.no_grad():
        for s in starts:
            w = ids[s:s + a.window]
            if len(w) < 2:
                continue
            lp = torch.log_softmax(ref.logits(w), -1)
            nll -= lp[torch.arange(len(w) - 1), torch.tensor(w[1:])].sum().item()
            n += len(w) - 1
    print(f"{os.path.basename(a.model)}: {n} held-out tokens, loss {nll / n:.4f}, perplexity {math.exp(nll / n):.2f}")


if __name__ == "__main__":
    main()
