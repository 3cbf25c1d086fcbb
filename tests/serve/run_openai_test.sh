#!/usr/bin/env bash
# run_openai_test.sh DRIFTWOOD WORKDIR — installs the pinned `openai` npm
# package (package-lock.json) into WORKDIR once, then runs openai_test.mjs.
set -eu
bin=$1 work=$2 here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
cp "$here/package.json" "$here/package-lock.json" "$here/openai_test.mjs" "$work/"
if ! [ -d "$work/node_modules/openai" ] || ! cmp -s "$here/package-lock.json" "$work/node_modules/.lock-copy"; then
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error) || {
    echo "serve_openai: npm ci failed (the npm registry must be reachable to fetch the openai client)" >&2; exit 1; }
  cp "$here/package-lock.json" "$work/node_modules/.lock-copy"
fi
cd "$work" && exec node openai_test.mjs "$bin"
