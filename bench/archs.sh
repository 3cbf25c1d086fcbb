#!/usr/bin/env bash
# bench/archs.sh — greedy continuations of Driftwood against llama.cpp on
# the architectures and RoPE variants both run (llama.cpp c392e50 has
# gemma2 and phi3 but not qwen3 or gemma3), from small random models that
# tools/mkmodel.py writes. Not a timing: each line says whether the 32
# generated tokens' text is the same.
#
#   bench/archs.sh [BUILD_DIR] [LLAMA_BIN_DIR]
# LLAMA_BIN_DIR holds llama-simple (../shared/peers/build-llamacpp.sh builds
# it); BUILD_DIR holds driftwood (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
LLAMA=${2:-/tmp/llamacpp/build/bin}
PY=${PYTHON:-/usr/bin/python3}
V=../shared/fixtures/vocab
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
[ -x "$LLAMA/llama-simple" ] || { echo "no $LLAMA/llama-simple: build llama.cpp with ../shared/peers/build-llamacpp.sh" >&2; exit 77; }
P="The quick brown fox jumps over the lazy dog and then"
same=0 total=0
# name | mkmodel arguments (gemma2 needs 26, 42 or 46 layers in llama.cpp)
while IFS='|' read -r name args; do
  [ -n "$name" ] || continue
  # shellcheck disable=SC2086
  "$PY" tools/mkmodel.py --dim 64 --heads 4 --kv-heads 2 --ffn 128 --ctx 512 --seed 3 $args \
    --vocab "$V/ggml-vocab-llama-spm.gguf" -o "$W/$name.gguf"
  theirs=$("$LLAMA/llama-simple" -m "$W/$name.gguf" -n 32 "$P" 2>/dev/null | tail -1 | sed 's/^<s> //')
  ours="$P$("$BUILD/driftwood" generate --model "$W/$name.gguf" --prompt "$P" -n 32 --temp 0 --ignore-eos 2>/dev/null)"
  total=$((total + 1))
  if [ "$theirs" = "$ours" ]; then same=$((same + 1)); verdict=same; else verdict=DIFFERENT; fi
  printf '%-22s %s\n' "$name" "$verdict"
  [ "$verdict" = same ] || printf '  llama.cpp: %s\n  driftwood: %s\n' "$theirs" "$ours"
done <<'LIST'
gemma2-f32|--arch gemma2 --layers 26 --type f32 --swa 8 --attn-softcap 5 --final-softcap 3
gemma2-q8_0|--arch gemma2 --layers 26 --type q8_0 --swa 8
phi3-f32-swa|--arch phi3 --layers 2 --type f32 --swa 8
phi3-partial-rope|--arch phi3 --layers 2 --type f16 --rot 8 --swa 0
phi3-longrope|--arch phi3 --layers 2 --type f32 --longrope --orig-ctx 16 --swa 0
llama-yarn|--arch llama --layers 2 --type f32 --yarn 4 --orig-ctx 128
qwen2-yarn|--arch qwen2 --layers 2 --type f32 --yarn 8 --orig-ctx 64
llama-head-dim|--arch llama --layers 2 --type f32 --head-dim 32
qwen2-q8_0|--arch qwen2 --layers 2 --type q8_0
LIST
echo "$same of $total the same"
[ "$same" = "$total" ]
