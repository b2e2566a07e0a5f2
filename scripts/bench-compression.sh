#!/usr/bin/env bash
# Compression's cost, rtsync beside its Socket.IO peer, runs alternating:
# CPU per delivery and bytes read per delivery of the fan-out load with
# 2 KB events (`rtsync-bench --event-bytes 2048 fanout`), plain and with
# permessage-deflate offered (`--deflate`), against one rtsync sidecar
# (RTS_COMPRESSION on: compressed once per audience) and one instance of
# bench/socketio-peer (PER_MESSAGE_DEFLATE=1: Socket.IO's perMessageDeflate,
# threshold 1024). A fresh server and Redis per run; one JSON line per run.
# Usage: scripts/bench-compression.sh [rate-per-writer] [runs] [seconds]
# (10 tables x 20 subscribers x 2 writers: deliveries/s = 400 x rate).
# RTSYNC_BIN / RTSYNC_BENCH name other builds (default: this tree's release).
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-50}"; runs="${2:-3}"; secs="${3:-10}"
side="${RTSYNC_BIN:-target/release/rtsync}"
bench="${RTSYNC_BENCH:-target/release/rtsync-bench}"
scripts/ensure-redis.sh
[ -n "${RTSYNC_BENCH:-}" ] || cargo build --release --locked --bins >&2
(cd bench/socketio-peer && npm ci --no-audit --no-fund --silent >&2)
. scripts/bench-lib.sh
load=(fanout --tables 10 --subscribers 20 --writers 2 --rate "$rate")
for run in $(seq 1 "$runs"); do
  for d in "" "--deflate"; do
    start_redis
    start_sidecar "deflate-$run" "$side"
    out=$("$bench" --duration "$secs" --json --pid "$sidecar_pid" --url "$sidecar_url" \
      --event-bytes 2048 $d "${load[@]}")
    echo "{\"system\": \"rtsync\", \"run\": $run, \"deflate\": \"$d\", \"out\": $out}"
    kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null || true
    redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
  done
  for pmd in 0 1; do
    start_redis
    port="$(free_port)"
    PER_MESSAGE_DEFLATE=$pmd PORT="$port" REDIS_URL="redis://127.0.0.1:$rport" \
      node bench/socketio-peer/server.mjs >"$work/peer.log" 2>&1 &
    peer=$!; pids+=($peer)
    for _ in $(seq 1 200); do grep -q listening "$work/peer.log" 2>/dev/null && break; sleep 0.05; done
    d=""; [ "$pmd" = 1 ] && d="--deflate"
    out=$("$bench" --duration "$secs" --json --pid "$peer" --url "ws://127.0.0.1:$port" \
      --event-bytes 2048 $d "${load[@]}" --proto socketio)
    echo "{\"system\": \"peer\", \"run\": $run, \"deflate\": \"$d\", \"out\": $out}"
    kill "$peer"; wait "$peer" 2>/dev/null || true
    redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
  done
done
