#!/usr/bin/env bash
# Idle memory per connection: a fresh Redis and one fresh sidecar per run,
# then `rtsync-bench idle` (N authenticated connections, each subscribed to
# one of T tables, held idle; RSS growth of the sidecar / N).
# Usage: scripts/bench-idle.sh BIN [connections] [tables] [proto...]
#   proto: rtsync (/ws), socketio (/socket.io/ over WebSocket), polling
#   (/socket.io/ long-polling sessions, one pending GET each). Default: all three.
# BENCH names the rtsync-bench binary (default target/release/rtsync-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$1"; conns="${2:-10000}"; tables="${3:-100}"; shift $(( $# < 3 ? $# : 3 ))
protos=("$@"); [ ${#protos[@]} -ge 1 ] || protos=(rtsync socketio polling)
bench="${BENCH:-${CARGO_TARGET_DIR:-target}/release/rtsync-bench}"
# The idle WebSocket clients read nothing, so they answer no Engine.IO ping:
# with the default 25 s + 20 s, a connect phase longer than 45 s (10,000
# connections on a loaded machine) would lose the first sessions before the
# measurement. A long ping interval keeps them (the polling clients answer
# pings either way).
export RTS_SOCKETIO_PING_INTERVAL_MS="${RTS_SOCKETIO_PING_INTERVAL_MS:-600000}"
. scripts/bench-lib.sh
for proto in "${protos[@]}"; do
  start_redis
  start_sidecar "idle-$proto" "$bin"
  case "$proto" in
    polling) how=(--polling) ;;
    *) how=(--proto "$proto") ;;
  esac
  out=$("$bench" --json --pid "$sidecar_pid" --url "$sidecar_url" idle \
    --connections "$conns" --tables "$tables" "${how[@]}")
  echo "{\"bin\": \"$bin\", \"proto\": \"$proto\", \"result\": $out}"
  kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null || true
  redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
done
