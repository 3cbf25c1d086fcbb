"""gguflib.py — a small, independent GGUF v3 reader and writer in Python
(numpy only), used by tools/mkmodel.py and the PyTorch reference in
tests/reference/. It shares no code with the C loader on purpose: the
reference must not inherit the engine's mistakes.

Types handled: F32, F16, BF16, Q8_0, Q4_0 here, and through gquants.py
Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS (quantise and
dequantise).
"""
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gquants  # noqa: E402

GGUF_MAGIC = b"GGUF"
# value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
           BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
# tensor types
T_F32, T_F16, T_Q4_0, T_Q8_0, T_BF16 = 0, 1, 2, 8, 30
TYPE_NAMES = {"f32": T_F32, "f16": T_F16, "bf16": T_BF16, "q8_0": T_Q8_0, "q4_0": T_Q4_0, **gquants.NAMES}
_BLOCK = {T_F32: (1, 4), T_F16: (1, 2), T_BF16: (1, 2), T_Q8_0: (32, 34), T_Q4_0: (32, 18), **gquants.BLOCK}


def block_of(tt):
    """(elements, bytes) of one block of tensor type tt."""
    return _BLOCK[tt]


def byte_chars():
    """GPT-2's reversible map from bytes to printable characters, in which
    byte-level BPE vocabularies (tokenizer.ggml.model "gpt2") spell tokens."""
    keep = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or b >= 0xAE]
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(0x100 + n)
            n += 1
    return out


def add_llama_hparams(w, arch, ctx, dim, layers, ffn, heads, kv_heads, rope_base=10000.0, eps=1e-5,
                      head_dim=None, n_rot=None):
    """The hyper-parameter keys of a llama-family model (ARCH.*), as
    llama.cpp's converter writes them. head_dim (when not dim/heads) adds
    key_length and value_length; RoPE covers n_rot dims of each head (all
    of it by default)."""
    hd = head_dim or dim // heads
    keys = [("context_length", U32, ctx), ("embedding_length", U32, dim),
            ("block_count", U32, layers), ("feed_forward_length", U32, ffn),
            ("attention.head_count", U32, heads), ("attention.head_count_kv", U32, kv_heads)]
    if hd != dim // heads or dim % heads:
        keys += [("attention.key_length", U32, hd), ("attention.value_length", U32, hd)]
    keys += [("rope.dimension_count", U32, n_rot or hd), ("rope.freq_base", F32, rope_base),
             ("attention.layer_norm_rms_epsilon", F32, eps)]
    for key, vt, val in keys:
        w.add(f"{arch}.{key}", vt, val)


class Reader:
    def __init__(self, path):
        self.buf = open(path, "rb").read()
        self.pos = 0
        if self.buf[:4] != GGUF_MAGIC:
            raise ValueError(f"{path}: not GGUF")
        self.version, n_tensors, n_kv = struct.unpack_from("<IQQ", self.buf, 4)
        self.pos = 24
        self.kv = {}    # key -> (type, value, elem_type)
        for _ in range(n_kv):
            key = self._str()
            vt = self._u("<I")
            if vt == ARRAY:
                et = self._u("<I")
                n = self._u("<Q")
                val = [self._val(et) for _ in range(n)]
                self.kv[key] = (vt, val, et)
            else:
                self.kv[key] = (vt, self._val(vt), None)
        infos = []
        for _ in range(n_tensors):
            name = self._str()
            nd = self._u("<I")
            ne = [self._u("<Q") for _ in range(nd)]
            tt = self._u("<I")
            off = self._u("<Q")
            infos.append((name, ne, tt, off))
        align = self.kv.get("general.alignment", (U32, 32, None))[1]
        start = (self.pos + align - 1) // align * align
        self.tensors = {}
        for name, ne, tt, off in infos:
            n = int(np.prod(ne))
            bs, ts = _BLOCK[tt]
            raw = self.buf[start + off:start + off + n // bs * ts]
            self.tensors[name] = (ne, tt, raw)

    def _u(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def _str(self):
        n = self._u("<Q")
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8", errors="surrogateescape")

    def _val(self, t):
        if t == STRING:
            return self._str()
        return self._u(_SCALAR[t])

    def get(self, key, default=None):
        return self.kv[key][1] if key in self.kv else default

    def tensor(self, name):
        """Dequantised float64 array shaped like PyTorch (reversed ne)."""
        ne, tt, raw = self.tensors[name]
        flat = dequantize(tt, raw, int(np.prod(ne)))
        return flat.reshape(list(reversed(ne)))


def dequantize(tt, raw, n):
    b = np.frombuffer(raw, dtype=np.uint8)
    if tt == T_F32:
        return np.frombuffer(raw, dtype="<f4").astype(np.float64)
    if tt == T_F16:
        return np.frombuffer(raw, dtype="<f2").astype(np.float64)
    if tt == T_BF16:
        u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return u.view(np.float32).astype(np.float64)
    if tt == T_Q8_0:
        blk = b.reshape(-1, 34)
        d = blk[:, :2].copy().view("<f2").astype(np.float64)
        q = blk[:, 2:].view(np.int8).astype(np.float64)
        return (d * q).reshape(-1)
    if tt == T_Q4_0:
        blk = b.reshape(-1, 18)
        d = blk[:, :2].copy().view("<f2").astype(np.float64)
        qs = blk[:, 2:]
        lo = (qs & 15).astype(np.float64) - 8
        hi = (qs >> 4).astype(np.float64) - 8
        return (d * np.concatenate([lo, hi], axis=1)).reshape(-1)
    if tt in gquants.BLOCK:
        return gquants.dequantize(tt, raw).astype(np.float64)
    raise ValueError(f"type {tt}")


def quantize(tt, x):
    """x: float32 array whose last dim is ne[0]. Returns bytes."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    if tt == T_F32:
        return x.astype("<f4").tobytes()
    if tt == T_F16:
        return x.astype("<f2").tobytes()
    if tt == T_BF16:
        u = x.view(np.uint32).astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even
        return u.astype("<u2").tobytes()
    if tt in gquants.BLOCK:
        return gquants.quantize(tt, x)
    blk = x.reshape(-1, 32)
    if tt == T_Q8_0:
        amax = np.abs(blk).max(axis=1)
        d = (amax / 127.0).astype(np.float32)
        inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1), 0).astype(np.float32)
        q = np.clip(np.rint(blk * inv[:, None]), -127, 127).astype(np.int8)
        out = np.zeros((blk.shape[0], 34), dtype=np.uint8)
        out[:, :2] = d.astype("<f2").reshape(-1, 1).view(np.uint8)
        out[:, 2:] = q.view(np.uint8)
        return out.tobytes()
    if tt == T_Q4_0:
        idx = np.abs(blk).argmax(axis=1)
        mx = blk[np.arange(blk.shape[0]), idx]
        d = (mx / -8.0).astype(np.float32)
        inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0).astype(np.float32)
        q = np.clip(np.floor(blk * inv[:, None] + 8.5), 0, 15).astype(np.uint8)
        out = np.zeros((blk.shape[0], 18), dtype=np.uint8)
        out[:, :2] = d.astype("<f2").reshape(-1, 1).view(np.uint8)
        out[:, 2:] = q[:, :16] | (q[:, 16:] << 4)
        return out.tobytes()
    raise ValueError(f"type {tt}")


class Writer:
    def __init__(self, path, alignment=32):
        self.path = path
        self.align = alignment
        self.kv = []       # (key, type, value, elem_type)
        self.tensors = []  # (name, ne, type, bytes)

    def add(self, key, vtype, value, elem_type=None):
        self.kv.append((key, vtype, value, elem_type))

    def add_tensor(self, name, array, ttype):
        """array shaped like PyTorch; ne is the reverse."""
        ne = list(reversed(array.shape))
        self.tensors.append((name, ne, ttype, quantize(ttype, array)))

    @staticmethod
    def _s(s):
        b = s.encode("utf-8", errors="surrogateescape")
        return struct.pack("<Q", len(b)) + b

    def _v(self, t, v):
        return self._s(v) if t == STRING else struct.pack(_SCALAR[t], v)

    def write(self):
        out = bytearray(GGUF_MAGIC + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv)))
        for key, t, v, et in self.kv:
            out += self._s(key) + struct.pack("<I", t)
            if t == ARRAY:
                out += struct.pack("<IQ", et, len(v))
                if et == STRING:
                    out += b"".join(self._s(x) for x in v)
                elif et in (F32, I32, U32):
                    out += np.asarray(v, dtype={F32: "<f4", I32: "<i4", U32: "<u4"}[et]).tobytes()
                else:
                    out += b"".join(self._v(et, x) for x in v)
            else:
                out += self._v(t, v)
        off = 0
        offsets = []
        for name, ne, tt, data in self.tensors:
            offsets.append(off)
            off += (len(data) + self.align - 1) // self.align * self.align
        for (name, ne, tt, data), o in zip(self.tensors, offsets):
            out += self._s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
            out += struct.pack("<IQ", tt, o)
        out += b"\0" * ((-len(out)) % self.align)
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(out)
            for name, ne, tt, data in self.tensors:
                f.write(data)
                f.write(b"\0" * ((-len(data)) % self.align))
        os.replace(tmp, self.path)
