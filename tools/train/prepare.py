#!/usr/bin/env python3
"""prepare.py — the training data of the default model: the King James
Version of the Bible (public domain; Debian's bible-kjv-text package, read
through its `bible` program), cut into documents, a byte-level BPE
vocabulary trained on it, and the token streams train.py reads.

  prepare.py [--text KJV.txt] [--vocab 4096] -o DIR

Documents (each ends with an end-of-sequence token, so the model learns to
stop):
  * a chapter, "Genesis 1" and its verses one per line, then <|endoftext|>;
  * chat turns in ChatML: a verse as the user's message and the verses that
    follow it as the assistant's reply, closed by <|im_end|>.
Every 20th chapter (and the chat turns made from it) is held out for
validation. Writes DIR/tokenizer.json (tokens, merges, special ids),
DIR/train.bin and DIR/val.bin (uint16 token ids), DIR/meta.json.

Deterministic: the same text and arguments give the same files. No torch
needed (tools/gguflib.py, for the byte map, needs numpy).
"""
import argparse
import collections
import json
import os
import random
import re
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from gguflib import byte_chars  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# GPT-2's pre-tokenizer (llama.cpp's "gpt-2"), with \p{L} as [^\W\d_] and
# \p{N} as \d; identical on this ASCII corpus.
PRE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
SPECIAL_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


def read_kjv(path):
    if path:
        text = open(path, encoding="ascii").read()
    else:
        try:
            text = subprocess.run(["bible", "Gen1:1-Rev22:21"], check=True, capture_output=True,
                                  text=True).stdout
        except FileNotFoundError:
            sys.exit("prepare.py: the `bible` program is missing: apt-get install bible-kjv "
                     "(or pass --text with the KJV as plain text)")
    lines = text.split("\n")
    chapters, cur = [], None
    for i, ln in enumerate(lines):
        blank_before = i == 0 or not lines[i - 1].strip()
        blank_after = i + 1 >= len(lines) or not lines[i + 1].strip()
        m = re.match(r"^(\S.*\S) (\d+)$", ln)
        if m and blank_before and blank_after:
            cur = {"title": ln.strip(), "verses": []}
            chapters.append(cur)
            continue
        v = re.match(r"^\s+(\d+) (.*)$", ln)
        if v and cur is not None:
            cur["verses"].append(v.group(2).strip())
        elif ln.strip() and cur is not None and cur["verses"]:
            cur["verses"][-1] += " " + ln.strip()
    if len(chapters) != 1189:
        sys.exit(f"prepare.py: expected the 1189 chapters of the KJV, parsed {len(chapters)}")
    return chapters


def documents(chapters, seed):
    rng = random.Random(seed)
    train, val = [], []
    for ci, ch in enumerate(chapters):
        docs = [ch["title"] + "\n" + "\n".join(ch["verses"]) + "<|endoftext|>"]
        vs = ch["verses"]
        for _ in range(max(1, len(vs) // 4)):
            if len(vs) < 2:
                break
            i = rng.randrange(len(vs) - 1)
            k = rng.randint(1, 3)
            reply = " ".join(vs[i + 1:i + 1 + k])
            docs.append(f"<|im_start|>user\n{vs[i]}<|im_end|>\n<|im_start|>assistant\n{reply}<|im_end|>\n")
        (val if ci % 20 == 10 else train).extend(docs)
    rng.shuffle(train)
    return train, val


def pieces(text):
    """Split on special tokens; yields (is_special, str)."""
    for part in SPECIAL_RE.split(text):
        if part:
            yield part in SPECIALS, part


def train_bpe(docs, n_vocab):
    bc = byte_chars()
    words = collections.Counter()
    for d in docs:
        for sp, part in pieces(d):
            if not sp:
                words.update(PRE.findall(part))
    syms = [[bc[b] for b in w.encode("utf-8")] for w in words]
    freq = [words[w] for w in words]
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for wi, s in enumerate(syms):
        for a, b in zip(s, s[1:]):
            pairs[a, b] += freq[wi]
            where[a, b].add(wi)
    merges = []
    n_merges = n_vocab - 256 - len(SPECIALS)
    while len(merges) < n_merges and pairs:
        best = max(pairs.items(), key=lambda kv: (kv[1], [-ord(c) for c in kv[0][0] + " " + kv[0][1]]))[0]
        if pairs[best] < 2:
            break
        merges.append(best)
        a, b = best
        for wi in list(where[best]):
            s, f = syms[wi], freq[wi]
            for x, y in zip(s, s[1:]):
                pairs[x, y] -= f
                if pairs[x, y] <= 0:
                    del pairs[x, y]
                where[x, y].discard(wi)
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            syms[wi] = out
            for x, y in zip(out, out[1:]):
                pairs[x, y] += f
                where[x, y].add(wi)
        del where[best]
    tokens = [bc[b] for b in range(256)] + [a + b for a, b in merges] + SPECIALS
    return tokens, [f"{a} {b}" for a, b in merges]


class Encoder:
    def __init__(self, tokens, merges):
        self.bc = byte_chars()
        self.id = {t: i for i, t in enumerate(tokens)}
        self.rank = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
        self.cache = {}

    def word(self, w):
        if w in self.cache:
            return self.cache[w]
        s = [self.bc[b] for b in w.encode("utf-8")]
        while len(s) > 1:
            r = [(self.rank.get((s[i], s[i + 1]), 1 << 30), i) for i in range(len(s) - 1)]
            best, i = min(r)
            if best == 1 << 30:
                break
            s = s[:i] + [s[i] + s[i + 1]] + s[i + 2:]
        ids = [self.id[x] for x in s]
        self.cache[w] = ids
        return ids

    def encode(self, text):
        out = []
        for sp, part in pieces(text):
            if sp:
                out.append(self.id[part])
            else:
                for w in PRE.findall(part):
                    out.extend(self.word(w))
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", help="the KJV as `bible Gen1:1-Rev22:21` prints it (default: run that)")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    chapters = read_kjv(a.text)
    train, val = documents(chapters, a.seed)
    tokens, merges = train_bpe(train, a.vocab)
    enc = Encoder(tokens, merges)
    streams = {}
    for name, docs in (("train", train), ("val", val)):
        ids = []
        for d in docs:
            ids.extend(enc.encode(d))
        streams[name] = ids
        with open(os.path.join(a.out, name + ".bin"), "wb") as f:
            f.write(struct.pack(f"<{len(ids)}H", *ids))
    special = {s: tokens.index(s) for s in SPECIALS}
    json.dump({"tokens": tokens, "merges": merges, "special": special},
              open(os.path.join(a.out, "tokenizer.json"), "w"))
    n_bytes = {k: sum(len(d.encode()) for d in v) for k, v in (("train", train), ("val", val))}
    meta = {"corpus": "King James Version (1611/1769), public domain; Debian package bible-kjv-text",
            "chapters": len(chapters), "documents": {"train": len(train), "val": len(val)},
            "bytes": n_bytes, "tokens": {k: len(v) for k, v in streams.items()},
            "bytes_per_token": round(n_bytes["train"] / len(streams["train"]), 3),
            "n_vocab": len(tokens), "seed": a.seed}
    json.dump(meta, open(os.path.join(a.out, "meta.json"), "w"), indent=1)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
