#!/usr/bin/env python3
"""plot_loss.py LOSS.csv OUT.png — train.py's training and validation loss
against the step, with the lowest validation loss (the exported weights)
marked. Needs matplotlib (Debian: python3-matplotlib)."""
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    step = [int(r["step"]) for r in rows]
    tr = [float(r["train_loss"]) for r in rows]
    va = [float(r["val_loss"]) for r in rows]
    best = min(range(len(va)), key=va.__getitem__)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(step, tr, label="train (mean over the last 50 steps)")
    ax.plot(step, va, label="held-out (every 20th chapter)")
    ax.axvline(step[best], color="grey", ls=":", lw=1)
    ax.annotate(f"exported: step {step[best]}, held-out loss {va[best]:.3f} (ppl {math.exp(va[best]):.1f})",
                (step[best], va[best]), xytext=(10, 40), textcoords="offset points",
                arrowprops=dict(arrowstyle="->", color="grey"), fontsize=8)
    ax.set_xlabel("step (32 x 1024 tokens)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("driftwood-kjv: 15.7 M parameters, KJV Bible, H200")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
