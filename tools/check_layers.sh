#!/usr/bin/env bash
# check_layers.sh [SRC_DIR] — enforces STYLE.md §3: each folder under src/
# includes only project headers of the layers it may see (lower layers never
# include higher ones); src/cli uses only the public header. Exit 1 on a
# violation, naming file, line and header.
set -u
src=${1:-$(dirname "$0")/../src}
declare -A allowed=(
  [base]="base"
  [mem]="mem base"
  [wasm]="wasm mem base"
  [backend]="backend mem base"
  [llm]="llm backend mem base"
  [wasi]="wasi wasm mem base"
  [abi]="abi llm wasi backend wasm mem base"
  [actor]="actor abi llm wasi backend wasm mem base"
  [server]="server actor abi llm wasi backend wasm mem base"
  [cli]=""
)
bad=0
n=0
while IFS= read -r f; do
  rel=${f#"$src"/}
  layer=${rel%%/*}
  [ -n "${allowed[$layer]+x}" ] || { echo "$rel: folder '$layer' is not in the layer table"; bad=1; continue; }
  while IFS=: read -r line inc; do
    n=$((n + 1))
    dir=${inc%%/*}
    [ "$dir" = "$inc" ] && continue # a header beside the file, or driftwood.h
    case " ${allowed[$layer]} " in *" $dir "*) ;; *)
      echo "$rel:$line: layer '$layer' may not include \"$inc\""; bad=1 ;;
    esac
  done < <(grep -n '^#include "' "$f" | sed 's/^\([0-9]*\):#include "\([^"]*\)".*/\1:\2/')
done < <(find "$src" -name '*.c' -o -name '*.h' | grep -v '_test\.c$' | sort)
if [ -d "$src/cli" ] && grep -rn '^#include "' "$src/cli" | grep -v -e '"driftwood.h"' -e '"driftwood_server.h"' -e '"cli.h"'; then
  echo "src/cli may include only the public headers driftwood.h and driftwood_server.h"; bad=1
fi
[ $bad = 0 ] && echo "layers: $n project includes checked, 0 violations"
exit $bad
