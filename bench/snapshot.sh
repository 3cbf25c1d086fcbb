#!/usr/bin/env bash
# bench/snapshot.sh [BUILD_DIR] [REPS] — freeze/thaw against re-prefill on the
# 143M F16 model (CPU backend) at 24, 256, 1024 and 2048 tokens; writes
# bench/snapshot.csv and the chart bench/snapshot.png, prints the CSV.
set -euo pipefail
B=${1:-build}
REPS=${2:-3}
cd "$(dirname "$0")/.."
VOCAB=../shared/fixtures/vocab/ggml-vocab-starcoder.gguf
[ -f "$VOCAB" ] || { echo "bench/snapshot.sh: $VOCAB not found" >&2; exit 1; }
W=$(mktemp -d /tmp/dw-snap-bench-XXXXXX)
export DRIFTWOOD_CACHE=$W/cache
trap 'rm -rf "$W"' EXIT
/usr/bin/python3 tools/mkmodel.py --preset 143m --type f16 --seed 1 --vocab "$VOCAB" -o "$W/143m-f16.gguf"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; commit $(git rev-parse --short HEAD)" >&2
"$B/bench/bench_snapshot" "$W/143m-f16.gguf" "$B/bench/kv_actor.wasm" "$W" "$REPS" 24 256 1024 2048 | tee bench/snapshot.csv
/usr/bin/python3 bench/plot_png.py bench/snapshot.csv bench/snapshot.png
