#!/bin/bash
# run.sh — reproduces the default model, models/driftwood-kjv-q8_0.gguf,
# in one command: the corpus and vocabulary (prepare.py), training
# (train.py: CUDA when PyTorch sees a GPU, else the CPU), the GGUF
# (export.py) and its held-out perplexity by the float64 reference
# (perplexity.py).
#
#   tools/train/run.sh [OUT_DIR]        (default: build/train)
#
# Needs: Debian's bible-kjv (the `bible` program), python3-torch,
# python3-numpy and python3-matplotlib: scripts/deps.sh installs them when
# run as root, else prints the apt-get line. PYTHON picks the interpreter
# (default: Debian's /usr/bin/python3, which those packages serve). On an
# H200 training takes about 70 s; on a 2-core CPU expect many hours (pass
# TRAIN_ARGS="--steps N" to shorten it).
# The shipped file came from this script's steps with the defaults below
# (the training ran on the GPU machine; see models/README.md). GPU
# training is not bit-for-bit deterministic, so a rerun gives a model of
# the same quality, not the same bytes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/train}
py=${PYTHON:-$([ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)}
"$here/../../scripts/deps.sh" bible-kjv python3-matplotlib
mkdir -p "$out"
$py "$here/prepare.py" -o "$out/data"
$py "$here/train.py" --data "$out/data" -o "$out/run" ${TRAIN_ARGS:-} | tee "$out/train.log"
$py "$here/export.py" --data "$out/data" --run "$out/run" --type q8_0 -o "$out/driftwood-kjv-q8_0.gguf"
# the first 16 windows of 1,024 held-out tokens (float64 on the CPU: minutes)
$py "$here/perplexity.py" "$out/driftwood-kjv-q8_0.gguf" "$out/data/val.bin" --max-windows 16
$py "$here/plot_loss.py" "$out/run/loss.csv" "$out/loss.png"
echo "run.sh: $out/driftwood-kjv-q8_0.gguf (copy it to models/ to make it the default)"
