#!/usr/bin/env bash
# check_layers_test.sh CHECKER — the layer checker on small trees of our
# own: a clean one passes; a lower layer that includes a higher one's
# header, one that calls a higher layer's function without any include
# (seen only at link level), cli calling a function the public header
# does not declare, host code including the guest's import header, a
# layer including an SDK header its row lacks, and getenv below the API
# each fail with a message naming the symbol or header.
set -u
chk=$1
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fail=0
mk() { # mk FILE CONTENT
  mkdir -p "$(dirname "$t/$1")"
  printf '%s\n' "$2" > "$t/$1"
}
obj() { # obj SRC: compile src/SRC into the build tree's CMake layout
  mkdir -p "$(dirname "$t/build/CMakeFiles/x.dir/src/$1")"
  cc -c -I"$t/include" -I"$t/src" "$t/src/$1" -o "$t/build/CMakeFiles/x.dir/src/$1.o"
}
expect() { # expect RC PATTERN: run the checker, compare
  out=$(bash "$chk" "$t/src" "$t/build" 2>&1)
  rc=$?
  if [ "$rc" != "$1" ] || ! grep -q -- "$2" <<<"$out"; then
    echo "FAIL: wanted rc $1 and '$2', got rc $rc:"; echo "$out"; fail=1
  else echo "ok: $2"; fi
}
mk include/driftwood.h 'int dw_pub(void);'
mk src/base/base.c 'int dw_base_x(void) { return 1; }'
mk src/actor/actor.c 'int dw_base_x(void); int dw_actor_y(void) { return dw_base_x(); }
int dw_pub(void) { return dw_actor_y(); }'
mk src/cli/main.c '#include "driftwood.h"
int main(void) { return dw_pub(); }'
for f in base/base.c actor/actor.c cli/main.c; do obj $f; done
expect 0 "0 violations"

mk src/base/base.c '#include "actor/actor.h"
int dw_base_x(void) { return 1; }'
mk src/actor/actor.h 'int dw_actor_y(void);'
expect 1 "base/base.c:1: layer 'base' may not include \"actor/actor.h\""

mk src/base/base.c 'int dw_actor_y(void); int dw_base_x(void) { return dw_actor_y(); }'
obj base/base.c
expect 1 "layer 'base' uses dw_actor_y, defined in src/actor/actor.c (layer 'actor')"

mk src/base/base.c 'int dw_base_x(void) { return 1; }'
obj base/base.c
mk src/cli/main.c '#include "driftwood.h"
int dw_actor_y(void); int main(void) { return dw_pub() + dw_actor_y(); }'
obj cli/main.c
expect 1 "layer 'cli' calls dw_actor_y"
mk src/cli/main.c '#include "driftwood.h"
int main(void) { return dw_pub(); }'
obj cli/main.c
mk sdk/include/driftwood_guest.h 'int dwg_emit(const void *p, unsigned n);'
mk sdk/include/driftwood_abi.h 'enum { DWG_OK = 0 };'
mk src/actor/actor.c '#include <driftwood_guest.h>
int dw_base_x(void); int dw_actor_y(void) { return dw_base_x(); }
int dw_pub(void) { return dw_actor_y(); }'
expect 1 "actor/actor.c:1: host code may not include the guest's <driftwood_guest.h>"
mk src/actor/actor.c 'int dw_base_x(void); int dw_actor_y(void) { return dw_base_x(); }
int dw_pub(void) { return dw_actor_y(); }'
mk src/base/base.c '#include <driftwood_abi.h>
int dw_base_x(void) { return 1; }'
expect 1 "base/base.c:1: layer 'base' may not include the guest SDK's <driftwood_abi.h>"
mk src/base/base.c '#include "driftwood_abi.h"
int dw_base_x(void) { return 1; }'
expect 1 "base/base.c:1: include the guest SDK's headers as <driftwood_abi.h>"
mk src/base/base.c '#include <stdlib.h>
int dw_base_x(void) { return getenv("X") != 0; }'
expect 1 "base/base.c:2: layer 'base' calls getenv"
exit $fail
