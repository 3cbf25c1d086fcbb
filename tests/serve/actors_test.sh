#!/usr/bin/env bash
# actors_test.sh DRIFTWOOD ECHO_ACTOR.wasm — the actor endpoints of
# `driftwood serve`, driven with curl: create, message (raw and SSE), fork,
# snapshot download and upload, delete, bounds (413, deep JSON, hostile
# snapshots, --max-memory), overload (429), and kill -9 during a burst of messages: after a
# restart no acknowledged message is lost.
set -u
bin=$1 echo_wasm=$2
dir=$(mktemp -d /tmp/dw-actors-XXXXXX)
pid=
fail=0 pass=0
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$dir"' EXIT
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi; }

start() {
  rm -f "$dir/ready"
  "$bin" serve --listen 127.0.0.1:0 --ready-file "$dir/ready" --state-dir "$dir/state" --module echo="$echo_wasm" \
    --workers 2 --max-queue "${MAXQ:-4096}" --max-body 64KiB --max-upload 8MiB ${EXTRA:-} 2>>"$dir/log" &
  pid=$!
  for _ in $(seq 300); do [ -s "$dir/ready" ] && break; sleep 0.1; done
  A=http://$(cat "$dir/ready")
}
code() { curl -s -o "$dir/out" -w '%{http_code}' "$@"; }

start
expect "create an actor" "$(code -XPOST "$A/v1/actors" -d '{"module":"echo","id":"e1"}')" 201
expect "a message's emits come back" "$(curl -s -XPOST "$A/v1/actors/e1/messages" --data-binary 'hello')" "1: hello"
sse=$(curl -s -N -H 'Accept: text/event-stream' -XPOST "$A/v1/actors/e1/messages" --data-binary 'again')
case $sse in *'event: emit'*'"text":"2: again\n"'*'event: done'*'"result":0'*) ok "server-sent events" ;;
  *) bad "server-sent events: $sse" ;; esac
expect "a trap is an error and leaves no effect" "$(code -XPOST "$A/v1/actors/e1/messages" --data-binary 'trap')" 422
expect "the actor is back from its snapshot" "$(curl -s -XPOST "$A/v1/actors/e1/messages" --data-binary 'x')" "3: x"
expect "fork" "$(code -XPOST "$A/v1/actors/e1/fork" -d '{"id":"e2"}')" 201
expect "the fork continues from the parent" "$(curl -s -XPOST "$A/v1/actors/e2/messages" --data-binary 'f')" "4: f"
expect "download a snapshot" "$(code "$A/v1/actors/e1/snapshot")" 200
cp "$dir/out" "$dir/e1.dws"
expect "upload it as a new actor" "$(code -XPOST "$A/v1/actors?id=e3" -H 'Content-Type: application/octet-stream' \
  --data-binary @"$dir/e1.dws")" 201
expect "the thawed actor has the state" "$(curl -s -XPOST "$A/v1/actors/e3/messages" --data-binary 'y')" "4: y"
head -c 3000 "$dir/e1.dws" >"$dir/trunc.dws"
expect "a truncated snapshot is refused" "$(code -XPOST "$A/v1/actors" -H 'Content-Type: application/octet-stream' \
  --data-binary @"$dir/trunc.dws")" 400
python3 - "$dir/e1.dws" "$dir/flip.dws" <<'PY'
import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[len(b) // 2] ^= 0x40; open(sys.argv[2], 'wb').write(b)
PY
expect "a corrupted snapshot is refused" "$(code -XPOST "$A/v1/actors" -H 'Content-Type: application/octet-stream' \
  --data-binary @"$dir/flip.dws")" 400
head -c $((9 << 20)) /dev/zero >"$dir/big"
expect "an upload over --max-upload is 413" "$(code -XPOST "$A/v1/actors" -H 'Content-Type: application/octet-stream' \
  --data-binary @"$dir/big")" 413
expect "a body over --max-body is 413" "$(code -XPOST "$A/v1/actors/e1/messages" --data-binary @"$dir/big")" 413
python3 -c 'print("{\"messages\":" + "[" * 20000 + "]" * 20000 + "}")' >"$dir/deep.json"
expect "deep JSON is refused" "$(code -XPOST "$A/v1/chat/completions" --data-binary @"$dir/deep.json")" 400
expect "malformed JSON is 400" "$(code -XPOST "$A/v1/chat/completions" -d '{"messages": [')" 400
expect "a bad actor id is 404" "$(code -XPOST "$A/v1/actors/..%2f..%2fetc/messages" -d x)" 404
( exec 3<>"/dev/tcp/127.0.0.1/${A##*:}" && printf 'GARBAGE / NOTHTTP\r\nHost\r\n\r\n\x00\xff' >&3 && timeout 5 cat <&3 >/dev/null ) 2>/dev/null || true
expect "malformed HTTP does not hurt the server" "$(code "$A/health")" 200
expect "delete" "$(code -XDELETE "$A/v1/actors/e2")" 200
expect "a deleted actor is gone" "$(code -XPOST "$A/v1/actors/e2/messages" -d x)" 404
n=$(curl -s "$A/v1/actors" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')
expect "list" "$n" 2

# kill -9 during a burst: every acknowledged message survives
for i in 1 2 3 4; do curl -s -o /dev/null -XPOST "$A/v1/actors" -d "{\"module\":\"echo\",\"id\":\"k$i\"}"; done
for i in 1 2 3 4; do
  ( for m in $(seq 200); do
      r=$(curl -s -m 5 -XPOST "$A/v1/actors/k$i/messages" --data-binary "m$m") && [ -n "$r" ] && echo "$r"
    done >"$dir/acked$i" ) &
done
sleep 1.5
kill -9 $pid
wait $pid 2>/dev/null
wait
start
lost=0
for i in 1 2 3 4; do
  acked=$(grep -c . "$dir/acked$i")
  next=$(curl -s -XPOST "$A/v1/actors/k$i/messages" --data-binary z | cut -d: -f1)
  [ "$acked" -ge 1 ] || { bad "no message was acknowledged before the kill"; lost=1; }
  [ "$next" -ge $((acked + 1)) ] || { bad "actor k$i: $acked acknowledged, but it resumes at $next"; lost=1; }
done
[ $lost = 0 ] && ok "kill -9 during a burst: no acknowledged message lost"
for f in "$dir"/state/actors/*.dws; do
  "$bin" actor inspect "$f" >/dev/null 2>&1 || { bad "snapshot $f is not valid"; lost=1; }
done
[ $lost = 0 ] && ok "every snapshot is valid after the kill"

# --max-memory: a message that grows past the cap traps and leaves no effect,
# and a snapshot with more memory than the cap is refused (413, not 429)
curl -s -o /dev/null -XPOST "$A/v1/actors" -d '{"module":"echo","id":"big"}'
curl -s -o /dev/null -XPOST "$A/v1/actors/big/messages" --data-binary grow
code "$A/v1/actors/big/snapshot" >/dev/null && cp "$dir/out" "$dir/big.dws"
kill -TERM $pid; wait $pid
EXTRA="--max-memory 2MiB" start
expect "a snapshot over --max-memory is refused" "$(code -XPOST "$A/v1/actors?id=big2" \
  -H 'Content-Type: application/octet-stream' --data-binary @"$dir/big.dws")" 413
case $(cat "$dir/out") in *"memory cannot grow"*) ok "the refusal says why" ;; *) bad "the refusal: $(cat "$dir/out")" ;; esac
curl -s -o /dev/null -XPOST "$A/v1/actors" -d '{"module":"echo","id":"small"}'
expect "a grow past --max-memory traps" "$(code -XPOST "$A/v1/actors/small/messages" --data-binary grow)" 422
expect "the capped actor answers after it" "$(curl -s -XPOST "$A/v1/actors/small/messages" --data-binary s)" "1: s"
kill -TERM $pid; wait $pid

# overload: a tiny queue answers 429 with Retry-After instead of growing
MAXQ=1 start
curl -s -o /dev/null -XPOST "$A/v1/actors" -d '{"module":"echo","id":"busy"}'
for i in $(seq 12); do curl -s -o /dev/null -m 3 -XPOST "$A/v1/actors/busy/messages" --data-binary spin & done
for _ in $(seq 20); do # until the spins have reached the queue (slow under sanitizers)
  sleep 0.25
  hdr=$(curl -s -D - -o /dev/null -XPOST "$A/v1/actors/e1/messages" --data-binary q)
  case $hdr in *" 429"*) break ;; esac
done
case $hdr in *" 429"*[Rr]etry-[Aa]fter*) ok "a full queue answers 429 with Retry-After" ;; *) bad "overload: $hdr" ;; esac
kill -9 $pid; wait $pid 2>/dev/null; pid=
wait
echo "$pass passed, $fail failed"
[ $fail = 0 ]
