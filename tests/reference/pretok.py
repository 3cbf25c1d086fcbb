#!/usr/bin/env python3
"""pretok.py — the pre-tokenizers of byte-level BPE vocabularies against an
independent splitter: Python's `regex` module (not PCRE2) applying each
regex list of ../shared/specs/pretokenizers.md §5 the way llama.cpp does
(§3.1: each regex refines the pieces so far, every match and every gap
between matches becomes a piece; `$` is the piece's end; in llama.cpp's
std::regex path `~` is not a symbol).

For one name of each family it writes a vocabulary-only GGUF with that
`tokenizer.ggml.pre`, runs `driftwood tokenize --split` on every test text
(llama.cpp's tokenizer test inputs in the fixtures, plus texts aimed at
each family: CJK, kana, Hangul, fullwidth marks, camel case, digit runs,
`~`, tabs and space runs, sentinels), and compares the pieces; every other
accepted name is checked to load and split like its family.

Usage: pretok.py DRIFTWOOD_BINARY FIXTURES_VOCAB_DIR WORKDIR
Exit 0 when all agree, 1 otherwise, 77 when `regex` or the fixtures are missing.
"""
import glob
import os
import subprocess
import sys

try:
    import regex
except ImportError:
    regex = None

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import gguflib as G  # noqa: E402

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
TAIL = r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3 = CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|" + TAIL
QWEN2 = CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|" + TAIL
CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
# deepseek-llm's letter class, from its code-point list (§5, F-DSLLM)
CASED = [(0x41, 0x5A), (0x61, 0x7A), (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BA), (0x1BC, 0x1BF),
         (0x1C4, 0x293), (0x295, 0x2AF), (0x370, 0x373), (0x376, 0x377), (0x37B, 0x37D), (0x37F, 0x37F),
         (0x386, 0x386), (0x388, 0x38A), (0x38C, 0x38C), (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481),
         (0x48A, 0x52F), (0x531, 0x556), (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD), (0x1C90, 0x1CBA),
         (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A), (0x1E00, 0x1F15), (0x1F18, 0x1F1D),
         (0x1F20, 0x1F45), (0x1F48, 0x1F4D), (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D),
         (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4), (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC),
         (0x1FD0, 0x1FD3), (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC), (0x2102, 0x2102),
         (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124), (0x2126, 0x2126),
         (0x2128, 0x2128), (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139), (0x213C, 0x213F), (0x2145, 0x2149),
         (0x214E, 0x214E), (0x2183, 0x2184), (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE), (0x2CF2, 0x2CF3),
         (0xA640, 0xA66D), (0xA680, 0xA69B), (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E), (0xAB70, 0xABBF),
         (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0x10400, 0x1044F),
         (0x104B0, 0x104D3), (0x104D8, 0x104FB), (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x118A0, 0x118DF),
         (0x1E900, 0x1E943)]
CASED_CLASS = "".join(chr(a) if a == b else chr(a) + "-" + chr(b) for a, b in CASED)
BLOOM = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"
SYM = r"[[\p{P}\p{S}]--[~]]"  # llama.cpp's \p{S} lacks ~ (V1 set difference)

# family -> (regex list, names that select it)
FAMILIES = {
    "default": ([r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"], ["default"]),
    "gpt2": ([GPT2], ["gpt-2", "phi-2", "roberta-bpe", "jina-es", "jina-de", "jina-v1-en", "jina-v2-es",
                      "jina-v2-de", "jina-v2-code", "gigachat", "mpt", "olmo", "jais"]),
    "llama3": ([LLAMA3], ["llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", "chatglm-bpe"]),
    "qwen2": ([QWEN2], ["qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"]),
    "starcoder": ([r"\p{N}", GPT2], ["starcoder", "smollm", "refact", "command-r", "codeshell", "exaone",
                                     "minerva-7b"]),
    "falcon": ([r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"], ["falcon"]),
    "deepseek-llm": ([r"[\r\n]", r"\s?[" + CASED_CLASS + "]+",
                      "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+", r"\s+\Z", CJK, r"\p{N}+"],
                     ["deepseek-llm"]),
    "deepseek-coder": ([r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK, r"\p{N}"], ["deepseek-coder"]),
    "deepseek-v3": ([r"\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
                     # one ASCII mark glued to ASCII letters; a char that is not CR/LF/letter/mark (~ is
                     # not one here) leading letters and combining marks; a mark run; the whitespace rules
                     r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|(?:~|[^\r\n\p{L}\p{P}\p{S}])?"
                     r"[\p{L}\p{M}]+| ?" + SYM + r"+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
                    ["deepseek-v3"]),
    "bloom": ([BLOOM], ["bloom", "gpt3-finnish", "poro-chat"]),
    "viking": ([BLOOM, r"\p{N}"], ["viking"]),
    "tekken": ([r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])"
                r"([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
               ["tekken"]),
    "chameleon": ([r"<sentinel:[0-9]+>", r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", r"([\t\n]|    |  )", r"\p{N}",
                   r"[\p{P}!-/:-@\[-`{-~]", GPT2], ["chameleon"]),
}
EXTRA = [
    "3333333 1234567890 12 1", "Hello World ПриветМир fooBar HTTPServer getHTTPResponse",
    "日本語のテキスト、カタカナ。한국어 텍스트 中文，标点！", "a~b ~~ x~ ~word", "<sentinel:12>IMGIMGABCZ\t\tx    y  z",
    "µ Ωmega Kelvin K ſ", "don't DON'T We'LL they're", "line\r\nnext\n\n  end   ", "$+<=>^`| ~ 100% #tag @me",
    "…。，、।۔،(|) done.", "  leading and trailing  ", "tab\tseparated\tvalues\n", "emoji 🙂🙂 and ✓ marks",
    "x.append(y); __init__ self._private", "नमस्ते दुनिया", "ＡＢＣ ａｂｃ １２３", "مرحبا بالعالم", "a\u0301e\u0301 combining",
]


def ref_split(text, res):
    pieces = [text]
    for pat in res:
        rx = regex.compile(pat, flags=regex.V1 if "--[" in pat else regex.V0)
        out = []
        for p in pieces:
            last = 0
            for m in rx.finditer(p):
                if m.end() == m.start():
                    continue
                if m.start() > last:
                    out.append(p[last:m.start()])
                out.append(p[m.start():m.end()])
                last = m.end()
            if last < len(p):
                out.append(p[last:])
        pieces = out
    return pieces


def escaped(s):
    """The quoting `driftwood tokenize --split` prints, byte for byte (as latin-1 text)."""
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        if c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c in "'\\":
            out.append("\\" + c)
        elif b < 0x20 or b == 0x7F:
            out.append(f"\\x{b:02x}")
        else:
            out.append(c)
    return "'" + "".join(out) + "'"


def engine_split(dw, vocab, text):
    r = subprocess.run([dw, "tokenize", "--model", vocab, "--split", "--", text], capture_output=True)
    if r.returncode:
        raise RuntimeError(r.stderr.decode(errors="replace"))
    return r.stdout.decode("latin-1").split("\n")[:-1]  # not splitlines: it cuts at \x85 too


def write_vocab(path, pre):
    w = G.Writer(path)
    toks = [G.byte_chars()[b] for b in range(256)]
    w.add("general.architecture", G.STRING, "llama")
    w.add("tokenizer.ggml.model", G.STRING, "gpt2")
    w.add("tokenizer.ggml.pre", G.STRING, pre)
    w.add("tokenizer.ggml.tokens", G.ARRAY, toks, G.STRING)
    w.add("tokenizer.ggml.token_type", G.ARRAY, [1] * 256, G.I32)
    w.add("tokenizer.ggml.merges", G.ARRAY, [], G.STRING)
    w.write()


def main():
    dw, vocab_dir, work = sys.argv[1:4]
    if regex is None:
        print("SKIP: Python's regex module is missing (Debian: python3-regex)")
        return 77
    inputs = sorted(glob.glob(os.path.join(vocab_dir, "*.inp")))
    if not inputs:
        print(f"SKIP: fixtures not found at {vocab_dir}")
        return 77
    texts = []
    for f in inputs:
        texts += [t for t in open(f, encoding="utf-8").read().split("\n__ggml_vocab_test__\n") if t and "\0" not in t]
    texts = sorted(set(texts)) + EXTRA
    os.makedirs(work, exist_ok=True)
    failures = 0
    for fam, (res, names) in FAMILIES.items():
        bad = 0
        for i, name in enumerate(names):
            vocab = os.path.join(work, f"pre-{name}.gguf")
            write_vocab(vocab, name)
            # the family's first name on every text; its aliases on a few
            for text in texts if i == 0 else EXTRA[:3]:
                want = [escaped(p) for p in ref_split(text, res)]
                got = engine_split(dw, vocab, text)
                if got != want:
                    bad += 1
                    if bad <= 3:
                        print(f"  {name}: {text!r}\n    driftwood: {got}\n    reference: {want}")
        failures += bad
        print(f"{fam:15s} {len(names):2d} names, {len(texts)} texts  {'ok' if not bad else f'{bad} differ'}",
              flush=True)
    write_vocab(os.path.join(work, "pre-x.gguf"), "no-such-pre")
    r = subprocess.run([dw, "tokenize", "--model", os.path.join(work, "pre-x.gguf"), "x"], capture_output=True,
                       text=True)
    refused = r.returncode != 0 and "no-such-pre" in r.stderr
    print(f"unknown name refused with its name: {'ok' if refused else 'FAIL: ' + r.stderr.strip()}")
    failures += not refused
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
