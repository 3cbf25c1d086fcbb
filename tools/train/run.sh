#!/bin/bash
# run.sh — reproduces the default model, models/driftwood-kjv-q8_0.gguf,
# in one command: the corpus and vocabulary (prepare.py), training
# (train.py: CUDA when PyTorch sees a GPU, else the CPU), the GGUF
# (export.py) and its held-out perplexity by the float64 reference
# (perplexity.py).
#
#   tools/train/run.sh [OUT_DIR]        (default: build/train)
#
# Needs: the `bible` program (Debian's bible-kjv, installed here when run
# as root), python3 with torch and numpy (Debian: python3-torch,
# python3-numpy). On an H200 training takes about 70 s; on a 2-core CPU
# expect many hours (pass TRAIN_ARGS="--steps N" to shorten it).
# The shipped file came from this script's steps with the defaults below
# (the training ran on the GPU machine; see models/README.md). GPU
# training is not bit-for-bit deterministic, so a rerun gives a model of
# the same quality, not the same bytes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/train}
py=${PYTHON:-python3}
if ! command -v bible >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y bible-kjv python3-torch python3-numpy python3-matplotlib >/dev/null
  else echo "run.sh: install the KJV text first: sudo apt-get install bible-kjv python3-torch python3-numpy python3-matplotlib" >&2; exit 1; fi
fi
mkdir -p "$out"
$py "$here/prepare.py" -o "$out/data"
$py "$here/train.py" --data "$out/data" -o "$out/run" ${TRAIN_ARGS:-} | tee "$out/train.log"
$py "$here/export.py" --data "$out/data" --run "$out/run" --type q8_0 -o "$out/driftwood-kjv-q8_0.gguf"
$py "$here/perplexity.py" "$out/driftwood-kjv-q8_0.gguf" "$out/data/val.bin"
$py "$here/plot_loss.py" "$out/run/loss.csv" "$out/loss.png"
echo "run.sh: $out/driftwood-kjv-q8_0.gguf (copy it to models/ to make it the default)"
