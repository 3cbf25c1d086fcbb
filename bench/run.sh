#!/usr/bin/env bash
# bench/run.sh [BUILD_DIR] [--quick] — runs every benchmark of the foundation
# and prints markdown for bench/RESULTS.md. Uses a fresh AOT cache.
#   1. zero-copy vs copy matmul (CPU backend), sizes 128..2048
#   2. instantiating a cached module (median of 2000)
#   3. guest speed: one workload source as native, wasm under Driftwood and
#      under Node.js WASI; median of 7 interleaved runs of each
#   4. compiling a ~2 MB module on a cache miss (skipped with --quick)
set -euo pipefail
B=${1:-build}
QUICK=${2:-}
cd "$(dirname "$0")/.."
export DRIFTWOOD_CACHE
DRIFTWOOD_CACHE=$(mktemp -d /tmp/dw-bench-cache-XXXXXX)
trap 'rm -rf "$DRIFTWOOD_CACHE" /tmp/dw-bench-big.*' EXIT

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; commit $(git rev-parse --short HEAD)"
echo
echo "### Zero-copy vs copy, CPU backend (N×N×N matmul through a guest)"
"$B/bench/bench_zerocopy" "$B/bench/mm.wasm"
echo
echo "### Instantiating a cached module"
"$B/driftwood" compile "$B/examples/matmul.wasm" >/dev/null
"$B/bench/bench_instantiate" "$B/examples/matmul.wasm" 2000
echo
echo "### Guest speed (workload.c: softmax + top-p over 128k logits, 20 rounds)"
"$B/driftwood" compile "$B/bench/workload.wasm" >/dev/null
declare -a nat dw nd
for i in 1 2 3 4 5 6 7; do
  nat+=("$("$B/bench/bench_workload_native" 20 | sed 's/.*ms=\([0-9.]*\).*/\1/')")
  dw+=("$("$B/driftwood" run "$B/bench/workload.wasm" 20 | sed 's/.*ms=\([0-9.]*\).*/\1/')")
  nd+=("$(node --no-warnings bench/node_wasi.mjs "$B/bench/workload.wasm" 20 | sed 's/.*ms=\([0-9.]*\).*/\1/')")
done
median() { printf '%s\n' "$@" | sort -g | sed -n 4p; }
mn=$(median "${nat[@]}"); md=$(median "${dw[@]}"); mo=$(median "${nd[@]}")
echo "| runner | median ms (7 runs) | / native |"
echo "|---|---|---|"
echo "| native (cc -O2) | $mn | 1.00 |"
echo "| Driftwood (wasm2c + cc -O2) | $md | $(echo "scale=3; $md / $mn" | bc) |"
echo "| Node.js $(node --version) WASI | $mo | $(echo "scale=3; $mo / $mn" | bc) |"
echo
if [ "$QUICK" != "--quick" ]; then
  echo "### Compiling a ~2 MB module on a cache miss"
  python3 bench/gen_big.py 6400 > /tmp/dw-bench-big.c
  clang --target=wasm32-wasi -O2 -o /tmp/dw-bench-big.wasm /tmp/dw-bench-big.c
  size=$(stat -c %s /tmp/dw-bench-big.wasm)
  t0=$(date +%s.%N); "$B/driftwood" compile /tmp/dw-bench-big.wasm >/dev/null; t1=$(date +%s.%N)
  "$B/driftwood" compile /tmp/dw-bench-big.wasm >/dev/null; t2=$(date +%s.%N)
  echo "module $size bytes: cold compile $(echo "$t1 - $t0" | bc) s; second load (cache hit) $(echo "$t2 - $t1" | bc) s"
fi
