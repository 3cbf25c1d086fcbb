#!/usr/bin/env bash
# bench/batch.sh [BUILD_DIR] [ROUNDS] [STREAMS...] — many sessions decoding
# at once (bench_batch: one thread each, prefill 128 then 64 greedy decode
# calls) with steps batched across sessions and with batching off
# (DRIFTWOOD_BATCH_MAX=1), side by side in one run, on the 143M f16 shape
# (tools/mkmodel.py; needs python3 with numpy). BACKEND=cuda for the GPU.
set -euo pipefail
B=${1:-build}
ROUNDS=${2:-3}
shift $(($# > 2 ? 2 : $#))
STREAMS=("${@:-1 4 16}")
[ ${#STREAMS[@]} -eq 1 ] && read -r -a STREAMS <<<"${STREAMS[0]}"
cd "$(dirname "$0")/.."
W=${DW_BENCH_WORK:-$(mktemp -d /tmp/dw-batch-XXXXXX)}
M=${DW_BENCH_MODEL:-$W/143m-f16.gguf}
[ -f "$M" ] || ${PYTHON:-python3} tools/mkmodel.py --preset 143m --type f16 --seed 1 \
  --vocab ../shared/fixtures/vocab/ggml-vocab-starcoder.gguf -o "$M" >/dev/null
echo "host: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "model: $M; backend ${BACKEND:-cpu}"
echo "| streams | batched decode (tok/s, aggregate) | unbatched | batched prefill | unbatched |"
echo "|---|---|---|---|---|"
for n in "${STREAMS[@]}"; do
  db=() du=() pb=() pu=()
  for r in $(seq "$ROUNDS"); do
    for mode in b u; do
      out=$( ( [ $mode = u ] && export DRIFTWOOD_BATCH_MAX=1; "$B/bench/bench_batch" "$M" "$n" 128 64 0 "${BACKEND:-cpu}" ) )
      d=$(sed -n 's/.*decode 64 tokens each \([0-9.]*\) tok.*/\1/p' <<<"$out")
      p=$(sed -n 's/.*prefill 128 tokens each \([0-9.]*\) tok.*/\1/p' <<<"$out")
      if [ $mode = b ]; then db+=("$d"); pb+=("$p"); else du+=("$d"); pu+=("$p"); fi
    done
  done
  j() { local IFS=/; echo "$*"; }
  echo "| $n | $(j "${db[@]}") | $(j "${du[@]}") | $(j "${pb[@]}") | $(j "${pu[@]}") |"
done
