"""gquants.py — numpy quantisers and dequantisers for the GGUF block
formats beyond Q8_0/Q4_0: Q4_1, Q5_0, Q5_1, IQ4_NL (32-element blocks) and
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS (256-element super-blocks). Layouts:
../shared/specs/quants.md. Used through tools/gguflib.py.

The dequantisers are written from the formulas, vectorised over blocks, and
share nothing with the C decoder (src/llm/kquant.c), which tests compare
against them: every product and sum is a float32 operation in the format's
order, so the result is the exact float32 that llama.cpp decodes.

The quantisers choose scales simply (each group's range, then the group
scales quantised against the super-block scale); they are good enough for
test models and for quantising a model here, not a match for llama.cpp's
search-based ones.
"""
import numpy as np

Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS = 3, 6, 7, 10, 11, 12, 13, 14, 20, 23
BLOCK = {Q4_1: (32, 20), Q5_0: (32, 22), Q5_1: (32, 24), IQ4_NL: (32, 18),
         Q2_K: (256, 84), Q3_K: (256, 110), Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210),
         IQ4_XS: (256, 136)}
NAMES = {"q4_1": Q4_1, "q5_0": Q5_0, "q5_1": Q5_1, "iq4_nl": IQ4_NL, "q2_k": Q2_K, "q3_k": Q3_K,
         "q4_k": Q4_K, "q5_k": Q5_K, "q6_k": Q6_K, "iq4_xs": IQ4_XS}
IQ4_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)

F32 = np.float32
_E = np.arange(256)                  # element index in a super-block
_HALF, _J, _T = _E // 128, (_E % 128) // 32, _E % 32
_QBYTE2 = 32 * _HALF + _T            # Q2_K/Q3_K: byte of an element's 2-bit code
_SHIFT2 = 2 * _J                     # ... and its bit position


def _f16(blk, off):
    return blk[:, off:off + 2].copy().view("<f2").astype(F32).reshape(-1)


def _put_f16(out, off, v):
    out[:, off:off + 2] = np.asarray(v, dtype=F32).astype("<f2").reshape(-1, 1).view(np.uint8)


def _u32(blk, off):
    return blk[:, off:off + 4].copy().view("<u4").reshape(-1).astype(np.uint64)


def _nib32(qs):
    """16 bytes -> the 32 codes of a block: element j low nibble of byte j,
    element j+16 its high nibble."""
    return np.concatenate([qs & 15, qs >> 4], axis=1)


def _k4_scales(S):
    """Q4_K/Q5_K: 12 bytes -> eight 6-bit scales and eight 6-bit mins."""
    S = S.astype(np.int32)
    sc = np.empty((S.shape[0], 8), np.int32)
    m = np.empty_like(sc)
    sc[:, :4], m[:, :4] = S[:, 0:4] & 63, S[:, 4:8] & 63
    sc[:, 4:] = (S[:, 8:12] & 15) | ((S[:, 0:4] >> 6) << 4)
    m[:, 4:] = (S[:, 8:12] >> 4) | ((S[:, 4:8] >> 6) << 4)
    return sc, m


def dequantize(tt, raw):
    """Bytes of whole blocks -> float32 values (flat)."""
    bs, size = BLOCK[tt]
    blk = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)
    if tt in (Q4_1, Q5_1, Q5_0, IQ4_NL):
        d = _f16(blk, 0)[:, None]
        if tt == IQ4_NL:
            return (d * IQ4_VALUES[_nib32(blk[:, 2:18])].astype(F32)).reshape(-1)
        if tt == Q4_1:
            return (d * _nib32(blk[:, 4:20]).astype(F32) + _f16(blk, 2)[:, None]).reshape(-1)
        hoff, qoff = (2, 6) if tt == Q5_0 else (4, 8)
        h = _u32(blk, hoff)[:, None]
        q = _nib32(blk[:, qoff:qoff + 16]).astype(np.int32) | (((h >> np.arange(32, dtype=np.uint64)) & 1) << 4).astype(np.int32)
        if tt == Q5_0:
            return (d * (q - 16).astype(F32)).reshape(-1)
        return (d * q.astype(F32) + _f16(blk, 2)[:, None]).reshape(-1)
    if tt == Q2_K:
        S = blk[:, 0:16][:, _E // 16]
        q = (blk[:, 16:80][:, _QBYTE2] >> _SHIFT2) & 3
        dl = _f16(blk, 80)[:, None] * (S & 15).astype(F32)
        ml = _f16(blk, 82)[:, None] * (S >> 4).astype(F32)
        return (dl * q.astype(F32) - ml).reshape(-1)
    if tt == Q3_K:
        S = blk[:, 96:108].astype(np.int32)
        i = np.arange(16)
        low = np.where(i < 8, S[:, i % 8] & 15, S[:, i % 8] >> 4)
        high = (S[:, 8 + i % 4] >> (2 * (i // 4))) & 3
        s = (low | (high << 4)) - 32
        l2 = (blk[:, 32:96][:, _QBYTE2] >> _SHIFT2) & 3
        hb = (blk[:, 0:32][:, _T] >> (4 * _HALF + _J)) & 1
        q = l2.astype(np.int32) - 4 * (1 - hb.astype(np.int32))
        dl = _f16(blk, 108)[:, None] * s[:, _E // 16].astype(F32)
        return (dl * q.astype(F32)).reshape(-1)
    if tt in (Q4_K, Q5_K):
        sc, m = _k4_scales(blk[:, 4:16])
        g = _E // 32
        qoff = 16 if tt == Q4_K else 48
        q = (blk[:, qoff:qoff + 128][:, 32 * (_E // 64) + _T] >> (4 * (g & 1))) & 15
        q = q.astype(np.int32)
        if tt == Q5_K:
            q |= ((blk[:, 16:48][:, _T] >> g) & 1).astype(np.int32) << 4
        dl = _f16(blk, 0)[:, None] * sc[:, g].astype(F32)
        ml = _f16(blk, 2)[:, None] * m[:, g].astype(F32)
        return (dl * q.astype(F32) - ml).reshape(-1)
    if tt == Q6_K:
        lo = (blk[:, 0:128][:, 64 * _HALF + _T + 32 * (_J % 2)] >> (4 * (_J >= 2))) & 15
        hi = (blk[:, 128:192][:, 32 * _HALF + _T] >> (2 * _J)) & 3
        q = (lo.astype(np.int32) | (hi.astype(np.int32) << 4)) - 32
        sc = blk[:, 192:208].view(np.int8)[:, _E // 16].astype(F32)
        return ((_f16(blk, 208)[:, None] * sc) * q.astype(F32)).reshape(-1)
    if tt == IQ4_XS:
        b = np.arange(8)
        sh = blk[:, 2:4].copy().view("<u2").astype(np.int32)
        sl = blk[:, 4:8].astype(np.int32)
        ls = ((sl[:, b // 2] >> (4 * (b & 1))) & 15) | (((sh >> (2 * b)) & 3) << 4)
        dl = _f16(blk, 0)[:, None] * (ls - 32).astype(F32)
        j = _E % 32
        idx = (blk[:, 8:136][:, 16 * (_E // 32) + j % 16] >> (4 * (j >= 16))) & 15
        return (dl[:, _E // 32] * IQ4_VALUES[idx].astype(F32)).reshape(-1)
    raise ValueError(f"type {tt}")


# ---- quantisers ----------------------------------------------------------------


def _div(a, b):
    """a / b, 0 where b == 0."""
    b = np.asarray(b, dtype=F32)
    return np.where(b != 0, a / np.where(b != 0, b, 1), 0).astype(F32)


def _signed_absmax(g):
    """The element of largest magnitude along the last axis, with its sign."""
    idx = np.abs(g).argmax(axis=-1)
    return np.take_along_axis(g, idx[..., None], axis=-1)[..., 0]


def _as_f16(v):
    return np.asarray(v, dtype=F32).astype(np.float16).astype(F32)


def _nearest_iq4(v):
    """Index of the code-book value nearest to each v."""
    return np.abs(v[..., None] - IQ4_VALUES.astype(F32)).argmin(axis=-1).astype(np.uint8)


def _pack_nib32(q):
    return (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)


def _scale_min_codes(g, nmax, cmax):
    """Q2_K/Q4_K/Q5_K: per group a step and a (non-negative) offset covering
    [min(g, 0), max(g)] with codes 0..nmax; both coded 0..cmax against the
    super-block's f16 d and dmin. Returns d, dmin, the scale and min codes,
    and the element codes (shaped like g)."""
    mn = np.minimum(g.min(axis=-1), 0)
    scale, mneg = ((g.max(axis=-1) - mn) / nmax).astype(F32), (-mn).astype(F32)
    d, dmin = _as_f16(scale.max(axis=1) / cmax), _as_f16(mneg.max(axis=1) / cmax)
    sc = np.clip(np.rint(_div(scale, d[:, None])), 0, cmax).astype(np.int32)
    mq = np.clip(np.rint(_div(mneg, dmin[:, None])), 0, cmax).astype(np.int32)
    dl, ml = d[:, None] * sc.astype(F32), dmin[:, None] * mq.astype(F32)
    q = np.clip(np.rint(_div(g + ml[..., None], dl[..., None])), 0, nmax).astype(np.int32)
    return d, dmin, sc, mq, q


def _signed_scale_codes(g, qlo, qhi, slo, shi):
    """Q3_K/Q6_K: per group a signed step mapping its largest-magnitude
    element to code qlo, coded slo..shi against the super-block's f16 d;
    element codes qlo..qhi. Returns d, the scale codes, the codes (flat per
    super-block)."""
    gs = _signed_absmax(g) / qlo
    d = _as_f16(np.abs(gs).max(axis=1) / shi)
    sc = np.clip(np.rint(_div(gs, d[:, None])), slo, shi).astype(np.int32)
    dl = d[:, None] * sc.astype(F32)
    q = np.clip(np.rint(_div(g, dl[..., None])), qlo, qhi).astype(np.int32).reshape(g.shape[0], -1)
    return d, sc, q


def quantize(tt, x):
    """x: float32 values (flat, a multiple of the block). Returns bytes."""
    bs, size = BLOCK[tt]
    x = np.ascontiguousarray(x, dtype=F32).reshape(-1, bs)
    nb = x.shape[0]
    out = np.zeros((nb, size), dtype=np.uint8)
    if tt in (Q4_1, Q5_1):
        nmax = 15 if tt == Q4_1 else 31
        mn, mx = x.min(axis=1), x.max(axis=1)
        d, m = _as_f16((mx - mn) / nmax), _as_f16(mn)
        q = np.clip(np.rint(_div(x - m[:, None], d[:, None])), 0, nmax).astype(np.uint32)
        _put_f16(out, 0, d)
        _put_f16(out, 2, m)
        if tt == Q4_1:
            out[:, 4:20] = _pack_nib32(q.astype(np.uint8))
            return out.tobytes()
        h = ((q >> 4) << np.arange(32, dtype=np.uint32)).sum(axis=1).astype("<u4")
        out[:, 4:8] = h.reshape(-1, 1).view(np.uint8)
        out[:, 8:24] = _pack_nib32((q & 15).astype(np.uint8))
        return out.tobytes()
    if tt == Q5_0:
        d = _as_f16(_signed_absmax(x) / -16)
        q = np.clip(np.floor(_div(x, d[:, None]) + 16.5), 0, 31).astype(np.uint32)
        _put_f16(out, 0, d)
        h = ((q >> 4) << np.arange(32, dtype=np.uint32)).sum(axis=1).astype("<u4")
        out[:, 2:6] = h.reshape(-1, 1).view(np.uint8)
        out[:, 6:22] = _pack_nib32((q & 15).astype(np.uint8))
        return out.tobytes()
    if tt == IQ4_NL:
        d = _as_f16(_signed_absmax(x) / -127)
        _put_f16(out, 0, d)
        out[:, 2:18] = _pack_nib32(_nearest_iq4(_div(x, d[:, None])))
        return out.tobytes()
    if tt == Q2_K:
        d, dmin, sc, mq, q = _scale_min_codes(x.reshape(nb, 16, 16), 3, 15)
        q = q.astype(np.uint8).reshape(nb, 256)
        out[:, 0:16] = (sc | (mq << 4)).astype(np.uint8)
        np.add.at(out[:, 16:80], (slice(None), _QBYTE2), (q << _SHIFT2).astype(np.uint8))
        _put_f16(out, 80, d)
        _put_f16(out, 82, dmin)
        return out.tobytes()
    if tt == Q3_K:
        d, s, q = _signed_scale_codes(x.reshape(nb, 16, 16), -4, 3, -32, 31)
        q = q + 4
        l2, hb = (q & 3).astype(np.uint8), (q >> 2).astype(np.uint8)
        np.add.at(out[:, 0:32], (slice(None), _T), (hb << (4 * _HALF + _J)).astype(np.uint8))
        np.add.at(out[:, 32:96], (slice(None), _QBYTE2), (l2 << _SHIFT2).astype(np.uint8))
        u = s + 32
        for k in range(8):
            out[:, 96 + k] = (u[:, k] & 15) | ((u[:, k + 8] & 15) << 4)
        for k in range(16):
            out[:, 96 + 8 + k % 4] |= ((u[:, k] >> 4) << (2 * (k // 4))).astype(np.uint8)
        _put_f16(out, 108, d)
        return out.tobytes()
    if tt in (Q4_K, Q5_K):
        nmax = 15 if tt == Q4_K else 31
        d, dmin, sc, mq, q = _scale_min_codes(x.reshape(nb, 8, 32), nmax, 63)
        _put_f16(out, 0, d)
        _put_f16(out, 2, dmin)
        out[:, 4:8] = (sc[:, :4] | ((sc[:, 4:] >> 4) << 6)).astype(np.uint8)
        out[:, 8:12] = (mq[:, :4] | ((mq[:, 4:] >> 4) << 6)).astype(np.uint8)
        out[:, 12:16] = ((sc[:, 4:] & 15) | ((mq[:, 4:] & 15) << 4)).astype(np.uint8)
        qoff = 16 if tt == Q4_K else 48
        for c in range(4):
            out[:, qoff + 32 * c:qoff + 32 * c + 32] = (q[:, 2 * c] & 15) | ((q[:, 2 * c + 1] & 15) << 4)
        if tt == Q5_K:
            out[:, 16:48] = ((q >> 4) << np.arange(8)[None, :, None]).sum(axis=1).astype(np.uint8)
        return out.tobytes()
    if tt == Q6_K:
        d, sc, q = _signed_scale_codes(x.reshape(nb, 16, 16), -32, 31, -128, 127)
        q = q + 32
        lo, hi = (q & 15).astype(np.uint8), (q >> 4).astype(np.uint8)
        np.add.at(out[:, 0:128], (slice(None), 64 * _HALF + _T + 32 * (_J % 2)), (lo << (4 * (_J >= 2))).astype(np.uint8))
        np.add.at(out[:, 128:192], (slice(None), 32 * _HALF + _T), (hi << (2 * _J)).astype(np.uint8))
        out[:, 192:208] = sc.astype(np.int8).view(np.uint8)
        _put_f16(out, 208, d)
        return out.tobytes()
    if tt == IQ4_XS:
        g = x.reshape(nb, 8, 32)
        gs = _signed_absmax(g) / -127
        d = _as_f16(np.abs(gs).max(axis=1) / 31)
        ls = np.clip(np.rint(_div(gs, d[:, None])), -32, 31).astype(np.int32) + 32
        dl = d[:, None] * (ls - 32).astype(F32)
        idx = _nearest_iq4(_div(g, dl[..., None]))
        _put_f16(out, 0, d)
        sh = ((ls >> 4) << (2 * np.arange(8))).sum(axis=1).astype("<u2")
        out[:, 2:4] = sh.reshape(-1, 1).view(np.uint8)
        out[:, 4:8] = (ls[:, 0::2] & 15) | ((ls[:, 1::2] & 15) << 4)
        for b in range(8):
            out[:, 8 + 16 * b:24 + 16 * b] = _pack_nib32(idx[:, b])
        return out.tobytes()
    raise ValueError(f"type {tt}")
