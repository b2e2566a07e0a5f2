#!/usr/bin/env bash
# Edit-to-screen latency on a quiet table (`rtsync-bench edit-latency`): one
# writer on one server at 100 edits/s, one reader on another, p50/p99 from
# `record_change` sent to the event received. For each rtsync build given
# (default: this tree's release build), two fresh sidecars on one throwaway
# Redis measured on /ws and on /socket.io/; then (Redis flushed) two
# instances of the Socket.IO peer (bench/socketio-peer) with the same
# generator. Runs alternate between the systems. Prints one JSON line per
# measurement.
# Usage: scripts/bench-edit-latency.sh [seconds] [runs] [rtsync-bin...]
# RATE sets the edits per second (default 100); PEER=0 skips the peer.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; runs="${2:-1}"; shift 2 || shift $#
bins=("$@")
[ ${#bins[@]} -ge 1 ] || bins=(target/release/rtsync)
rate="${RATE:-100}"
scripts/ensure-redis.sh
cargo build --release --locked --bins >&2
[ "${PEER:-1}" = 0 ] || (cd bench/socketio-peer && npm ci --no-audit --no-fund --silent >&2)
. scripts/bench-lib.sh
start_redis
bench() { target/release/rtsync-bench --duration "$secs" --json --url "$1" edit-latency --rate "$rate" --proto "$2"; }
for run in $(seq 1 "$runs"); do
  for bin in "${bins[@]}"; do
    urls=(); sidecars=()
    for name in a b; do
      start_sidecar "edit-$run-$name" "$bin"
      urls+=("$sidecar_url"); sidecars+=("$sidecar_pid")
    done
    for proto in rtsync socketio; do
      echo "{\"bin\": \"$bin\", \"run\": $run, \"result\": $(bench "${urls[0]},${urls[1]}" "$proto")}"
    done
    kill "${sidecars[@]}"; wait "${sidecars[@]}" 2>/dev/null || true
    redis-cli -p "$rport" flushall >/dev/null
  done
  [ "${PEER:-1}" = 0 ] && continue
  urls=(); peers=()
  for name in a b; do
    port="$(free_port)"
    PORT="$port" REDIS_URL="redis://127.0.0.1:$rport" node bench/socketio-peer/server.mjs >"$work/peer-$run-$name.log" 2>&1 &
    pids+=($!); peers+=($!)
    for _ in $(seq 1 200); do grep -q listening "$work/peer-$run-$name.log" 2>/dev/null && break; sleep 0.05; done
    urls+=("ws://127.0.0.1:$port")
  done
  echo "{\"bin\": \"socketio-peer\", \"run\": $run, \"result\": $(bench "${urls[0]},${urls[1]}" socketio)}"
  kill "${peers[@]}"; wait "${peers[@]}" 2>/dev/null || true
  redis-cli -p "$rport" flushall >/dev/null
done
