#!/usr/bin/env bash
# check_layers.sh [SRC_DIR [BUILD_DIR]] — enforces STYLE.md §3 (the table
# below is the one checked): each folder under src/ uses only the layers it
# may see (lower layers never use higher ones), in two ways:
#  - includes: every #include "dir/…" and every <…> header of the project
#    (include/, sdk/include/) is of an allowed layer;
#  - links (with BUILD_DIR, a configured and built tree): every symbol an
#    object file of a layer leaves undefined and another layer's object
#    defines (nm) is of an allowed layer, so a call to a function declared
#    without its header is caught too. src/cli may call only the functions
#    the public headers include/*.h declare, and the guest SDK's sampler
#    (sdk/, which it shares with guests; abi and the layers above it may
#    use the sampler and the ABI's wire format, driftwood_abi.h, too: a row
#    STYLE §3 lacks).
# Exit 1 on a violation, naming file, line or symbol, and the layer.
set -u
src=${1:-$(dirname "$0")/../src}
build=${2:-}
declare -A allowed=(
  [base]="base"
  [mem]="mem base"
  [wasm]="wasm mem base"
  [backend]="backend mem base"
  [llm]="llm backend mem base"
  [wasi]="wasi wasm mem base"
  [abi]="abi llm wasi backend wasm mem base sdk"
  [api]="api abi llm wasi backend wasm mem base sdk"
  [actor]="actor api abi llm wasi backend wasm mem base sdk"
  [server]="server actor api abi llm wasi backend wasm mem base sdk"
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
    if [ "$dir" = "$inc" ]; then # a header beside the file, or a public one
      [ -f "$src/../sdk/include/$inc" ] && [ ! -f "$(dirname "$f")/$inc" ] && {
        echo "$rel:$line: include the guest SDK's headers as <$inc>"; bad=1; }
      continue
    fi
    case " ${allowed[$layer]} " in *" $dir "*) ;; *)
      echo "$rel:$line: layer '$layer' may not include \"$inc\""; bad=1 ;;
    esac
  done < <(grep -n '^#include "' "$f" | sed 's/^\([0-9]*\):#include "\([^"]*\)".*/\1:\2/')
done < <(find "$src" -name '*.c' -o -name '*.h' | grep -v '_test\.c$' | sort)
if [ -d "$src/cli" ] && grep -rn '^#include "' "$src/cli" | grep -v -e '"driftwood.h"' -e '"driftwood_server.h"' -e '"cli.h"'; then
  echo "src/cli may include only the public headers driftwood.h and driftwood_server.h"; bad=1
fi
# <…> includes of the project's own headers. sdk/include's sampler and
# ABI wire format (driftwood_sampler.h, driftwood_abi.h: no host types) are
# a layer of their own, "sdk", for the layers whose row names it and for
# cli; driftwood_guest.h declares the guest's wasm imports and is never
# host code's. The public headers are included as "driftwood.h". Every
# other <…> is a system header.
root="$src/.."
while IFS=: read -r f line inc; do
  rel=${f#"$src"/}
  layer=${rel%%/*}
  if [ "$inc" = driftwood_guest.h ]; then
    echo "$rel:$line: host code may not include the guest's <$inc> (its wire format is <driftwood_abi.h>)"; bad=1
  elif [ -f "$root/sdk/include/$inc" ]; then
    case " ${allowed[$layer]:-} " in *" sdk "*) continue ;; esac
    [ "$layer" = cli ] && continue
    echo "$rel:$line: layer '$layer' may not include the guest SDK's <$inc>"; bad=1
  elif [ -f "$root/include/$inc" ] || [ -f "$root/sdk/include/$inc" ]; then
    echo "$rel:$line: <$inc> is a project header: include the public one as \"$inc\""; bad=1
  fi
done < <(grep -rn '^#include <' "$src" --include='*.c' --include='*.h' --include='*.cu' --include='*.cuh' |
  grep -v '_test\.c:' | sed 's/^\([^:]*\):\([0-9]*\):#include <\([^>]*\)>.*/\1:\2:\3/')

# The layers below the API read tunables from the settings they are given
# (base.h's dw_settings), never from the environment.
while IFS=: read -r f line _; do
  rel=${f#"$src"/}
  case ${rel%%/*} in base | mem | wasm | backend | llm | wasi | abi)
    echo "$rel:$line: layer '${rel%%/*}' calls getenv: take a dw_settings instead"; bad=1 ;;
  esac
done < <(grep -rn '\bgetenv *(' "$src" --include='*.c' --include='*.h' --include='*.cu' --include='*.cuh' | grep -v '_test\.c:')

links=0
if [ -n "$build" ]; then
  command -v nm >/dev/null || { echo "check_layers: nm (binutils) is needed for the link check"; exit 1; }
  objs=$(find "$build/CMakeFiles" -name '*.o' \( -path '*.dir/src/*' -o -path '*.dir/sdk/src/*' \) ! -name '*_test.c.o' | sort) # not other targets' copies (…dir/__/src/…)
  [ -n "$objs" ] || { echo "check_layers: no object files under $build/CMakeFiles (build it first)"; exit 1; }
  declare -A def_layer def_file
  obj_layer() { # CMakeFiles/x.dir/src/abi/abi.c.o -> abi; …/sdk/src/… -> sdk
    local o=${1#*.dir/}
    case $o in sdk/*) echo sdk ;; src/*) o=${o#src/}; echo "${o%%/*}" ;; *) echo "?" ;; esac
  }
  for o in $objs; do
    l=$(obj_layer "$o")
    while read -r sym; do def_layer[$sym]=$l; def_file[$sym]=${o#*.dir/}; done < <(nm -P --defined-only -g "$o" 2>/dev/null | awk '$2 ~ /^[TDBRCVW]$/ {print $1}')
  done
  public=" $(cat "$src/../include/"*.h | grep -o '\bdw[a-z0-9_]*[[:space:]]*(' | tr -d '( \t' | sort -u | tr '\n' ' ') "
  for o in $objs; do
    l=$(obj_layer "$o")
    [ "$l" = sdk ] && continue
    rel=${o#*.dir/}; rel=${rel%.o}
    while read -r sym; do
      d=${def_layer[$sym]:-}
      [ -z "$d" ] || [ "$d" = "$l" ] && continue
      links=$((links + 1))
      if [ "$l" = cli ]; then
        [ "$d" = sdk ] && continue
        case "$public" in *" $sym "*) continue ;; esac
        echo "$rel: layer 'cli' calls $sym (defined in ${def_file[$sym]%.o}), which the public headers do not declare"; bad=1
        continue
      fi
      case " ${allowed[$l]:-} " in *" $d "*) ;; *)
        echo "$rel: layer '$l' uses $sym, defined in ${def_file[$sym]%.o} (layer '$d')"; bad=1 ;;
      esac
    done < <(nm -P -u "$o" 2>/dev/null | awk '{print $1}')
  done
fi
[ $bad = 0 ] && echo "layers: $n project includes${build:+ and $links cross-layer symbol uses} checked, 0 violations"
exit $bad
