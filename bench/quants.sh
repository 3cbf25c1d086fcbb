#!/usr/bin/env bash
# bench/quants.sh [BUILD_DIR] [LLAMA_CPP_BIN_DIR] [ROUNDS] — weight types on
# the CPU, side by side with llama.cpp in one run: the 143M shape of
# DESIGN.md (dim 576, 30 layers, 9/3 heads, FFN 1536, tied, starcoder
# vocabulary), F16 and the Q8_0 and Q4_K_M files that llama.cpp's own
# quantiser makes of it (the same files for both engines; at dim 576 the
# Q4_K_M mix is mostly Q5_0, since 576 is not a multiple of 256). Prefill
# 128 tokens, decode 64; Driftwood natively (bench_llm_native, best of 3,
# with and without the 8-bit integer dot products) and llama-bench
# (-t 2, best of 3 runs of -r 1), interleaved ROUNDS times (default 3). Prints a markdown table
# of medians.
#
# LLAMA_CPP_BIN_DIR: where llama-bench and llama-quantize are, e.g. built by
# ../shared/peers/build-llamacpp.sh OUT cpu (OUT/build/bin).
set -euo pipefail
B=${1:-build}
L=${2:?usage: bench/quants.sh BUILD_DIR LLAMA_CPP_BIN_DIR [ROUNDS]}
ROUNDS=${3:-3}
cd "$(dirname "$0")/.."
VOCAB=../shared/fixtures/vocab/ggml-vocab-starcoder.gguf
[ -f "$VOCAB" ] || { echo "bench/quants.sh: $VOCAB not found" >&2; exit 1; }
for t in llama-bench llama-quantize; do
  [ -x "$L/$t" ] || { echo "bench/quants.sh: $L/$t not found" >&2; exit 1; }
done
W=$(mktemp -d /tmp/dw-quants-bench-XXXXXX)
trap 'rm -rf "$W"' EXIT
/usr/bin/python3 tools/mkmodel.py --preset 143m --type f16 --seed 1 --vocab "$VOCAB" -o "$W/143m-f16.gguf"
for q in Q8_0 Q4_K_M; do "$L/llama-quantize" "$W/143m-f16.gguf" "$W/143m-$q.gguf" "$q" >/dev/null 2>&1; done
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; commit $(git rev-parse --short HEAD)"
echo
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
dw() { # MODEL INT_DOT -> "prefill decode"
  DRIFTWOOD_INT_DOT=$2 "$B/bench/bench_llm_native" "$1" 128 64 3 |
    sed 's/.*prefill 128 tokens \([0-9.]*\).*decode 64 tokens \([0-9.]*\).*/\1 \2/'
}
lc() { # MODEL -> "prefill decode", each the best of 3 runs like ours
  for i in 1 2 3; do
    "$L/llama-bench" -m "$1" -p 128 -n 64 -t 2 -r 1 -o csv 2>/dev/null |
      awk -F'","' 'NR > 1 { v[NR] = $(NF - 1) } END { print v[2], v[3] }'
  done | awk '$1 > p { p = $1 } $2 > d { d = $2 } END { printf "%.1f %.1f\n", p, d }'
}
echo "| model | engine | prefill 128 (tok/s) | decode 64 (tok/s) |"
echo "|---|---|---|---|"
for t in f16 Q8_0 Q4_K_M; do
  f=$W/143m-$t.gguf
  declare -a ip=() id=() fp=() fd=() lp=() ld=()
  for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then a=$(dw "$f" 1); c=$(dw "$f" 0); l=$(lc "$f"); else l=$(lc "$f"); c=$(dw "$f" 0); a=$(dw "$f" 1); fi
    ip+=("${a% *}") id+=("${a#* }") fp+=("${c% *}") fd+=("${c#* }") lp+=("${l% *}") ld+=("${l#* }")
  done
  echo "| 143M $t | Driftwood | $(med "${ip[@]}") | $(med "${id[@]}") |"
  [ "$t" = f16 ] || echo "| 143M $t | Driftwood, f32 dots (DRIFTWOOD_INT_DOT=0) | $(med "${fp[@]}") | $(med "${fd[@]}") |"
  echo "| 143M $t | llama.cpp | $(med "${lp[@]}") | $(med "${ld[@]}") |"
done
echo
echo "Medians of $ROUNDS interleaved rounds, each run the best of 3 (both engines)."
