#!/usr/bin/env bash
# bench/freeze_memory.sh [BUILD_DIR] [MIB...] — the memory a freeze costs: peak
# RSS of one `driftwood actor send` (thaw, a message that writes one byte in
# every 4 KiB page, freeze to the state file) on bench/mem_actor.wasm holding
# MIB MiB of heap (default 64 256 512), against the state file's size.
# Prints a CSV: mib, snapshot_bytes, peak_rss_mib, send_s.
set -euo pipefail
B=${1:-build}
shift || true
SIZES=${*:-64 256 512}
cd "$(dirname "$0")/.."
W=$(mktemp -d /tmp/dw-freeze-mem-XXXXXX)
export DRIFTWOOD_CACHE=$W/cache
trap 'rm -rf "$W"' EXIT
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; commit $(git rev-parse --short HEAD)" >&2
echo "mib,snapshot_bytes,peak_rss_mib,send_s"
for mib in $SIZES; do
  "$B/driftwood" actor spawn --module "$B/bench/mem_actor.wasm" --state "$W/a.dws" >/dev/null
  "$B/driftwood" actor send --state "$W/a.dws" "fill $mib" >/dev/null
  /usr/bin/python3 - "$B/driftwood" "$W/a.dws" "$mib" <<'PY'
import os, resource, subprocess, sys, time
drift, state, mib = sys.argv[1:]
t = time.time()
subprocess.run([drift, "actor", "send", "--state", state, "write"], check=True, stdout=subprocess.DEVNULL)
dt = time.time() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{mib},{os.path.getsize(state)},{rss:.0f},{dt:.2f}")
PY
  rm -f "$W/a.dws"
done
