#!/usr/bin/env python3
"""quants.py — the C block decoders against the independent numpy ones
(tools/gquants.py), for every block format beyond Q8_0/Q4_0.

Writes one GGUF with, per type, (1) rows quantised by our quantiser from
Gaussian values and (2) rows of random bytes with random finite f16 scales
(every code and scale bit pattern occurs), each beside NAME.ref, the
float32 values the numpy decoder gives; then runs the C checker
(tests/quant_check.c), which requires the C decoder to match bit for bit and
its dot products to match float64 within 1e-5 of the sum of |terms|.
With a file quantised by llama.cpp (DW_LLAMACPP_GGUF), it checks that
file's tensors the same way.

Usage: quants.py QUANT_CHECK_BINARY WORKDIR
"""
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import gguflib as G  # noqa: E402
import gquants as Q  # noqa: E402

# where each format keeps its f16 scales (byte offsets in a block)
F16_FIELDS = {Q.Q4_1: (0, 2), Q.Q5_0: (0,), Q.Q5_1: (0, 2), Q.IQ4_NL: (0,), Q.Q2_K: (80, 82),
              Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,), Q.IQ4_XS: (0,)}
N = 1024


def random_blocks(rng, tt, n_blocks):
    bs, size = Q.BLOCK[tt]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in F16_FIELDS[tt]:
        # finite f16 of moderate size, either sign (exponent field 5..20)
        h = (rng.integers(0, 2, n_blocks) << 15) | (rng.integers(5, 21, n_blocks) << 10) | rng.integers(0, 1024, n_blocks)
        raw[:, off:off + 2] = h.astype("<u2").reshape(-1, 1).view(np.uint8)
    return raw.tobytes()


class RawWriter(G.Writer):
    def add_raw(self, name, ne, tt, data):
        self.tensors.append((name, ne, tt, data))


def main():
    checker, work = sys.argv[1:3]
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(7)
    path = os.path.join(work, "quants.gguf")
    w = RawWriter(path)
    w.add("general.architecture", G.STRING, "quant-test")
    w.add_tensor("x", rng.standard_normal(N).astype(np.float32), G.T_F32)
    for name, tt in Q.NAMES.items():
        bs, size = Q.BLOCK[tt]
        vals = rng.standard_normal((8, N)).astype(np.float32) * 0.05
        data = G.quantize(tt, vals)
        w.add_raw(f"{name}.quantised", [N, 8], tt, data)
        w.add_tensor(f"{name}.quantised.ref", Q.dequantize(tt, data).reshape(8, N), G.T_F32)
        data = random_blocks(rng, tt, 8 * N // bs)
        w.add_raw(f"{name}.random", [N, 8], tt, data)
        w.add_tensor(f"{name}.random.ref", Q.dequantize(tt, data).reshape(8, N), G.T_F32)
    w.write()
    rc = subprocess.call([checker, path])
    other = os.environ.get("DW_LLAMACPP_GGUF")
    if rc == 0 and other:
        rc = check_foreign(checker, other, os.path.join(work, "foreign.gguf"), rng)
    return rc


def check_foreign(checker, src, path, rng):
    """Every quantised matrix of a file someone else wrote, re-checked."""
    r = G.Reader(src)
    w = RawWriter(path)
    w.add("general.architecture", G.STRING, "quant-test")
    longest = max(ne[0] for ne, tt, raw in r.tensors.values())
    w.add_tensor("x", rng.standard_normal(longest).astype(np.float32), G.T_F32)
    seen = set()
    for name, (ne, tt, raw) in r.tensors.items():
        if tt not in Q.BLOCK or len(ne) != 2:
            continue
        seen.add(tt)
        short = name.replace("blk.", "b")[:58]
        w.add_raw(short, ne, tt, raw)
        w.add_tensor(short + ".ref", Q.dequantize(tt, raw).reshape(ne[1], ne[0]), G.T_F32)
    print(f"{src}: types {sorted(seen)}")
    w.write()
    return subprocess.call([checker, path])


if __name__ == "__main__":
    sys.exit(main())
