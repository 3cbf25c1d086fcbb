#!/usr/bin/env bash
# Installs (apt, when root) or names the Debian packages Driftwood needs.
# Usage: scripts/deps.sh [EXTRA_PACKAGE...]   — exits non-zero with the
# exact apt command when something is missing and we cannot install it
# ourselves. Extra packages are what one tool needs beyond the build and
# tests (tools/train/run.sh: the KJV text, matplotlib).
set -euo pipefail

pkgs=(cmake make gcc clang lld wabt wasi-libc libclang-rt-14-dev-wasm32
      libcriterion-dev libzstd-dev libssl-dev libjansson-dev libmicrohttpd-dev
      libsimde-dev libpcre2-dev libxxhash-dev pkg-config nodejs curl python3
      python3-numpy python3-torch python3-regex rustc libstd-rust-dev-wasm32 "$@")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# npm (the serve tests fetch the openai client with it): Debian's package
# unless the machine's Node.js brings its own
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "driftwood: missing Debian packages: ${missing[*]}" >&2
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install them with:  sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
