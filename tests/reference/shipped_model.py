#!/usr/bin/env python3
"""shipped_model.py — checks the default model that ships in models/
(trained by tools/train) as a user relies on it:

  1. its vocabulary: `driftwood tokenize` gives the ids of an independent
     BPE encoder (tools/train/prepare.py's, built from the file's own tokens
     and merges) on text with and without ChatML special tokens;
  2. its numerics: greedy logits of `driftwood generate --dump-logits`
     against the float64 reference (llama_ref.py) on the dequantised Q8_0
     weights, max |engine - ref| / max |ref| <= 1e-2 per position;
  3. it stops by itself: the chat example guest, given a few prompts and
     room for 400 tokens, ends each reply with its end-of-turn token; and a
     WASI-NN guest of WasmEdge's kind (tests/guests/nn_guest.c, streaming)
     reaches the end of sequence (status 100) on a ChatML prompt.

Usage: shipped_model.py DRIFTWOOD CHAT_WASM MODEL.gguf WORKDIR [NN_GUEST_WASM]
"""
import os
import re
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "train"))
import gguflib as G  # noqa: E402
import prepare  # noqa: E402
from llama_ref import Reference  # noqa: E402

TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "<|im_start|>user\nWhat is driftwood?<|im_end|>\n<|im_start|>assistant\n",
    "Numbers 12:3, 1,000 talents; don't   stop!\n\nAnd   (the sea) -- 'roared'.",
]
PROMPTS = ["What is driftwood?", "Tell me a story.", "Who made the sea?", "Write a haiku about driftwood."]


def main():
    dw, chat, model, work = sys.argv[1:5]
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(2)
    r = G.Reader(model)
    enc = prepare.Encoder(r.get("tokenizer.ggml.tokens"), r.get("tokenizer.ggml.merges"))
    fails = 0
    for t in TEXTS:
        got = subprocess.run([dw, "tokenize", "--model", model, "--no-bos", "--parse-special", t],
                             check=True, capture_output=True, text=True).stdout.split()
        want = enc.encode(t)
        ok = [int(x) for x in got] == want
        fails += not ok
        print(f"tokenize {t[:30]!r}...: {len(want)} tokens {'ok' if ok else 'FAIL: ' + ' '.join(got)}")

    ref = Reference(model)
    dump = os.path.join(work, "logits.bin")
    n_gen = 6
    for t in TEXTS[:2]:
        ids = enc.encode(t)
        subprocess.run([dw, "generate", "--model", model, "--prompt", t, "-n", str(n_gen), "--temp", "0",
                        "--ignore-eos", "--quiet", "--dump-logits", dump], check=True, capture_output=True)
        got = np.fromfile(dump, dtype="<f4").reshape(n_gen, -1).astype(np.float64)
        seq = ids + [int(np.argmax(got[i])) for i in range(n_gen - 1)]
        want = ref.logits(seq).numpy()[len(ids) - 1:]
        err = max(np.abs(got[i] - want[i]).max() / np.abs(want[i]).max() for i in range(n_gen))
        ok = err <= 1e-2
        fails += not ok
        print(f"logits {t[:30]!r}...: max rel err {err:.2e} (tol 1e-2) {'ok' if ok else 'FAIL'}")

    for p in PROMPTS:
        res = subprocess.run([dw, "run", "--model", f"default={model}", chat, "--seed", "1", "-n", "400", "--stats", p],
                             capture_output=True, text=True)
        m = re.search(r"generated (\d+)", res.stderr)
        n = int(m.group(1)) if m else -1
        ok = res.returncode == 0 and 0 < n < 400
        fails += not ok
        print(f"chat {p!r}: {n} tokens, {'stopped by itself' if ok else 'FAIL (did not stop)'}: {res.stdout.strip()[:100]}")
    checks = len(TEXTS) + 2 + len(PROMPTS)
    if len(sys.argv) > 5:
        checks += 1
        res = subprocess.run([dw, "run", "--nn-preload", f"default:GGML:AUTO:{model}", sys.argv[5], "default",
                              "stream", "<|im_start|>user\nWhat is driftwood?<|im_end|>\n<|im_start|>assistant\n"],
                             capture_output=True, text=True)
        ok = res.returncode == 0 and "] end 100" in res.stdout
        fails += not ok
        print(f"wasi-nn stream: {'reached the end of sequence' if ok else 'FAIL'}: {res.stdout.strip()[:160]}")
    print(f"{checks - fails} passed, {fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
