#!/usr/bin/env python3
"""plot_png.py CSV OUT.png — a log-log line chart of re-prefill, thaw and
freeze time against context length from bench/snapshot.sh's CSV, drawn
with the standard library only (zlib + struct PNG writer, a 5x7 bitmap
font), since the project does not depend on a plotting library."""
import csv
import math
import struct
import sys
import zlib

W, H, L, R, T, B = 720, 440, 70, 20, 30, 50
FONT = {  # 5x7 glyphs, rows top to bottom, bit 4 = leftmost column
    "0": [14, 17, 19, 21, 25, 17, 14], "1": [4, 12, 4, 4, 4, 4, 14], "2": [14, 17, 1, 2, 4, 8, 31],
    "3": [31, 2, 4, 2, 1, 17, 14], "4": [2, 6, 10, 18, 31, 2, 2], "5": [31, 16, 30, 1, 1, 17, 14],
    "6": [6, 8, 16, 30, 17, 17, 14], "7": [31, 1, 2, 4, 8, 8, 8], "8": [14, 17, 17, 14, 17, 17, 14],
    "9": [14, 17, 17, 15, 1, 2, 12], ".": [0, 0, 0, 0, 0, 12, 12], " ": [0] * 7, "m": [0, 0, 26, 21, 21, 17, 17],
    "s": [0, 0, 14, 16, 14, 1, 30], "t": [8, 8, 28, 8, 8, 9, 6], "o": [0, 0, 14, 17, 17, 17, 14],
    "k": [16, 16, 18, 20, 24, 20, 18], "e": [0, 0, 14, 17, 31, 16, 14], "n": [0, 0, 22, 25, 17, 17, 17],
    "p": [0, 0, 30, 17, 30, 16, 16], "r": [0, 0, 22, 25, 16, 16, 16], "f": [6, 9, 8, 28, 8, 8, 8],
    "i": [4, 0, 12, 4, 4, 4, 14], "l": [12, 4, 4, 4, 4, 4, 14], "h": [16, 16, 22, 25, 17, 17, 17],
    "a": [0, 0, 14, 1, 15, 17, 15], "w": [0, 0, 17, 17, 21, 21, 10], "z": [0, 0, 31, 2, 4, 8, 31],
    "x": [0, 0, 17, 10, 4, 10, 17], "g": [0, 0, 15, 17, 15, 1, 14], "c": [0, 0, 14, 16, 16, 17, 14], "-": [0, 0, 0, 31, 0, 0, 0],
    "(": [2, 4, 8, 8, 8, 4, 2], ")": [8, 4, 2, 2, 2, 4, 8], ",": [0, 0, 0, 0, 12, 4, 8], "/": [1, 1, 2, 4, 8, 16, 16],
}


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    xs = [float(r["tokens"]) for r in rows]
    series = [("re-prefill", [float(r["prefill_ms"]) for r in rows], (200, 40, 40)),
              ("thaw", [float(r["thaw_ms"]) for r in rows], (30, 120, 200)),
              ("freeze", [float(r["freeze_ms"]) for r in rows], (60, 160, 60))]
    px = [[255] * (W * 3) for _ in range(H)]

    def dot(x, y, c):
        if 0 <= x < W and 0 <= y < H:
            px[y][3 * x:3 * x + 3] = c

    def line(x0, y0, x1, y1, c, w=1):
        n = max(abs(x1 - x0), abs(y1 - y0), 1)
        for i in range(n + 1):
            x, y = x0 + (x1 - x0) * i // n, y0 + (y1 - y0) * i // n
            for d in range(-(w // 2), w // 2 + 1):
                dot(x, y + d, c)
                dot(x + d, y, c)

    def text(x, y, s, c=(0, 0, 0)):
        for ch in s:
            for ry, bits in enumerate(FONT.get(ch, FONT[" "])):
                for rx in range(5):
                    if bits >> (4 - rx) & 1:
                        dot(x + rx, y + ry, c)
            x += 6

    lx0, lx1 = math.log10(min(xs)), math.log10(max(xs))
    ys = [v for _, s, _ in series for v in s]
    ly0, ly1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    fx = lambda v: int(L + (math.log10(v) - lx0) / (lx1 - lx0 or 1) * (W - L - R))  # noqa: E731
    fy = lambda v: int(H - B - (math.log10(v) - ly0) / (ly1 - ly0 or 1) * (H - T - B))  # noqa: E731
    line(L, T, L, H - B, (0, 0, 0))
    line(L, H - B, W - R, H - B, (0, 0, 0))
    for e in range(ly0, ly1 + 1):
        y = fy(10 ** e)
        line(L - 4, y, W - R, y, (225, 225, 225))
        label = f"{10 ** e:g}"
        text(L - 8 - 6 * len(label), y - 3, label)
    for x in xs:
        line(fx(x), H - B, fx(x), H - B + 4, (0, 0, 0))
        text(fx(x) - 3 * len(str(int(x))), H - B + 8, str(int(x)))
    text(W // 2 - 60, H - 18, "context (tokens)")
    text(6, 10, "ms (log)")
    for i, (name, s, c) in enumerate(series):
        pts = [(fx(x), fy(v)) for x, v in zip(xs, s)]
        for a, b in zip(pts, pts[1:]):
            line(*a, *b, c, 3)
        for p in pts:
            for d in range(-3, 4):
                line(p[0] - 3, p[1] + d, p[0] + 3, p[1] + d, c)
        text(W - R - 140, T + 10 + 14 * i, name, c)
    raw = b"".join(b"\0" + bytes(r) for r in px)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    open(sys.argv[2], "wb").write(png)


if __name__ == "__main__":
    main()
