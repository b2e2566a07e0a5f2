#!/usr/bin/env bash
# Redis instructions per `FCALL rtsync_commit`, counted by callgrind
# (repeatable to about 0.5 %, whatever else the machine runs): for each
# build given, a Redis under `valgrind --tool=callgrind`, the build's Lua
# library loaded by starting one of its sidecars, one sharded subscriber on
# the table's doorbell (as a sidecar serving the table would be), then
# `redis-benchmark` making the sidecar's call for a connection's edit (8
# KEYS: history index and the user's undo stacks; one record, one field).
# Each build is counted twice, after 200 calls and after 200 + `calls`; the
# difference over `calls` leaves out start-up, loading and warm-up.
# Usage: scripts/bench-commit-cost.sh [calls] [BIN...]
#   (default: 1000 calls; target/release/rtsync, built first)
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${1:-1000}"; shift || true
bins=("$@")
scripts/ensure-redis.sh >/dev/null
if ! command -v valgrind >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq valgrind >/dev/null
  else echo "bench-commit-cost: install valgrind (apt-get install valgrind)" >&2; exit 1; fi
fi
if [ ${#bins[@]} -eq 0 ]; then
  cargo build --release --locked --bins >&2
  bins=(target/release/rtsync)
fi
. scripts/bench-lib.sh
t='rts:{bench-fcall}'
header='{"type":"update","entityType":"record","entityId":"r1","tableId":"bench-fcall","baseId":"bench","userId":"bench-w0","origin":"bench-origin.1","maxRecordBytes":4194304,"answerBytes":1048576,"undo":true,"recordHistory":100,"maxEventBytes":1048576}'

# Instructions Redis ran in all, after `n` calls.
count() {
  local bin=$1 n=$2 out="$work/cg.$RANDOM" vg sub
  rport="$(free_port)"
  valgrind --tool=callgrind --callgrind-out-file="$out" redis-server --port "$rport" \
    --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
  vg=$!
  pids+=("$vg")
  for _ in $(seq 1 600); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  start_sidecar "cost" "$bin"
  kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null || true
  redis-cli -p "$rport" ssubscribe "$t:presence" >/dev/null 2>&1 &
  sub=$!
  pids+=("$sub")
  redis-benchmark -p "$rport" -c 1 -n "$n" -q FCALL rtsync_commit 8 "$t:events" "$t:rec:r1" \
    "$t:records" "$t:sink-floor" "$t:presence" "$t:rh:r1" "$t:undo:8:bench-w0" \
    "$t:redo:8:bench-w0" "$header" '[{"fieldId":"f1","newValue":153}]' '' 86400000 153 >/dev/null
  kill "$sub" 2>/dev/null || true
  redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
  wait "$vg" 2>/dev/null || true
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

for bin in "${bins[@]}"; do
  a=$(count "$bin" 200)
  b=$(count "$bin" $((200 + calls)))
  echo "{\"bin\": \"$bin\", \"calls\": $calls, \"instructionsPerCall\": $(( (b - a) / calls ))}"
done
