#!/usr/bin/env bash
# bench/llm.sh [BUILD_DIR] [ROUNDS] — the LLM engine on the 143M shape of
# DESIGN.md (dim 576, 30 layers, 9/3 heads, FFN 1536, tied embeddings,
# starcoder vocabulary of 49152), F16 and Q8_0: prefill 128 tokens and
# decode 64, through a guest (bench/llm_guest.wasm via the ABI: the real
# path) and natively (bench_llm_native, public API), interleaved ROUNDS
# times in alternating order (default 3; each run is best of 3). Prints a
# markdown table.
set -euo pipefail
B=${1:-build}
ROUNDS=${2:-3}
cd "$(dirname "$0")/.."
VOCAB=../shared/fixtures/vocab/ggml-vocab-starcoder.gguf
[ -f "$VOCAB" ] || { echo "bench/llm.sh: $VOCAB not found" >&2; exit 1; }
W=$(mktemp -d /tmp/dw-llm-bench-XXXXXX)
export DRIFTWOOD_CACHE=$W/cache
trap 'rm -rf "$W"' EXIT
PY=/usr/bin/python3
for t in f16 q8_0; do
  $PY tools/mkmodel.py --preset 143m --type $t --seed 1 --vocab "$VOCAB" -o "$W/143m-$t.gguf"
done
"$B/driftwood" compile "$B/bench/llm_guest.wasm" >/dev/null
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; commit $(git rev-parse --short HEAD)"
echo
echo "| model | path | prefill 128 (tok/s) | decode 64 (tok/s) |"
echo "|---|---|---|---|"
for t in f16 q8_0; do
  declare -a np=() nd=() gp=() gd=()
  for r in $(seq "$ROUNDS"); do
    # alternate which path runs first: on this VM the second of two
    # back-to-back runs is measurably slower, whatever it is
    if [ $((r % 2)) = 1 ]; then
      n=$("$B/bench/bench_llm_native" "$W/143m-$t.gguf" 128 64 3)
      g=$("$B/driftwood" run --model m="$W/143m-$t.gguf" "$B/bench/llm_guest.wasm" 128 64 3)
    else
      g=$("$B/driftwood" run --model m="$W/143m-$t.gguf" "$B/bench/llm_guest.wasm" 128 64 3)
      n=$("$B/bench/bench_llm_native" "$W/143m-$t.gguf" 128 64 3)
    fi
    np+=("$(sed 's/.*prefill 128 tokens \([0-9.]*\).*/\1/' <<<"$n")")
    nd+=("$(sed 's/.*decode 64 tokens \([0-9.]*\).*/\1/' <<<"$n")")
    gp+=("$(sed 's/.*prefill 128 tokens \([0-9.]*\).*/\1/' <<<"$g")")
    gd+=("$(sed 's/.*decode 64 tokens \([0-9.]*\).*/\1/' <<<"$g")")
  done
  med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  all() { printf '%s ' "$@"; }
  echo "| 143M $t | native | $(med "${np[@]}") ($(all "${np[@]}")) | $(med "${nd[@]}") ($(all "${nd[@]}")) |"
  echo "| 143M $t | guest | $(med "${gp[@]}") ($(all "${gp[@]}")) | $(med "${gd[@]}") ($(all "${gd[@]}")) |"
done
echo
echo "Medians of $ROUNDS interleaved rounds (each round's value in parentheses, each the best of 3)."
