#!/usr/bin/env bash
# bench/cuda_llm.sh [BUILD_DIR] [LLAMA_BENCH] [ROUNDS] — the CUDA LLM engine on
# a GPU machine, beside llama.cpp on the same GGUF files:
#   - the 1.10B f16 Llama shape of DESIGN.md (dim 2048, 16 layers, 32/8
#     heads, FFN 8192, llama-spm vocabulary of 32000) and the 143M f16 shape;
#   - prefill 512 tokens and decode 128, through a guest (bench/llm_guest.wasm:
#     decode from Wasm, logits in guest memory, sampling in the guest) and
#     natively (bench_llm_native), ROUNDS interleaved rounds (default 3), each
#     the best of 3; logits by DMA (default) and by mapped writes; CUDA graphs
#     on and off (native);
#   - llama-bench -p 512 -n 128 -fa 1 -ngl 99 on the same file, when given;
#   - snapshots: freeze/thaw on the GPU against re-prefill on the GPU.
# Needs python3 with numpy (tools/mkmodel.py) and a CUDA device.
set -euo pipefail
B=${1:-build}
LB=${2:-}
ROUNDS=${3:-3}
cd "$(dirname "$0")/.."
VOCAB=${DW_VOCAB:-../shared/fixtures/vocab}
W=${DW_BENCH_WORK:-$(mktemp -d /tmp/dw-cuda-bench-XXXXXX)}
mkdir -p "$W"
export DRIFTWOOD_CACHE=$W/cache
for spec in "1.1b llama-spm" "143m starcoder"; do
  set -- $spec
  [ -f "$W/$1-f16.gguf" ] || python3 tools/mkmodel.py --preset "$1" --type f16 --seed 1 --vocab "$VOCAB/ggml-vocab-$2.gguf" \
    -o "$W/$1-f16.gguf" >/dev/null
done
"$B/driftwood" compile "$B/bench/llm_guest.wasm" >/dev/null
echo "card: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
echo "host: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
field() { sed -n "s/.*$1 \([0-9]*\) tokens \([0-9.]*\) tok.*/\2/p" <<<"$2"; }
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| model | path | prefill 512 (tok/s) | decode 128 (tok/s) | rounds (prefill / decode) |"
echo "|---|---|---|---|---|"
for m in 1.1b 143m; do
  M=$W/$m-f16.gguf
  declare -A P=() D=()
  paths=(native native-nograph guest guest-mapped)
  for r in $(seq "$ROUNDS"); do
    order=("${paths[@]}")
    [ $((r % 2)) = 0 ] && order=(guest-mapped guest native-nograph native)
    for p in "${order[@]}"; do
      case $p in
        native) out=$("$B/bench/bench_llm_native" "$M" 512 128 3 0 cuda) ;;
        native-nograph) out=$(DRIFTWOOD_CUDA_GRAPHS=0 "$B/bench/bench_llm_native" "$M" 512 128 3 0 cuda) ;;
        guest) out=$("$B/driftwood" run --backend cuda --model m="$M" "$B/bench/llm_guest.wasm" 512 128 3 2>&1) || echo "$out" >&2 ;;
        guest-mapped) out=$(DRIFTWOOD_CUDA_LOGITS=mapped "$B/driftwood" run --backend cuda --model m="$M" \
                            "$B/bench/llm_guest.wasm" 512 128 3 2>&1) || echo "$out" >&2 ;;
      esac
      P[$p]+="$(field prefill "$out") "
      D[$p]+="$(field decode "$out") "
    done
  done
  for p in "${paths[@]}"; do
    echo "| $m f16 | driftwood $p | $(med ${P[$p]}) | $(med ${D[$p]}) | ${P[$p]}/ ${D[$p]}|"
  done
  if [ -n "$LB" ]; then
    echo
    "$LB" -m "$M" -p 512 -n 128 -fa 1 -ngl 99 -r 3 2>/dev/null | grep -E '^\|' || echo "(llama-bench failed)"
    echo
  fi
done
echo
echo "Medians of $ROUNDS interleaved rounds, each the best of 3."
echo
echo "snapshots on the GPU, 1.1B f16 (tokens, bytes, prefill ms, freeze ms, thaw ms, thaw GB/s, speed-up, idle RSS KiB):"
DW_BENCH_BACKEND=cuda "$B/bench/bench_snapshot" "$W/1.1b-f16.gguf" "$B/bench/kv_actor.wasm" "$W" 3 24 256 1024 2048
