#!/usr/bin/env bash
# Capacity at the latency target, rtsync and its Socket.IO peer in one run:
# one throwaway Redis; two release-built rtsync sidecars ramped by
# `rtsync-bench ramp` on /ws, then two more on their own /socket.io/
# endpoint (`--proto socketio`); then (Redis flushed) two instances of the Socket.IO 4
# + Redis Streams adapter peer (bench/socketio-peer) ramped by the same load
# generator with `--proto socketio`. Prints one JSON line per system.
# Usage: scripts/bench-ramp.sh [seconds-per-step] [extra ramp flags...]
# RTSYNC_BIN=path ramps another rtsync build (before/after comparisons).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"; shift || true
scripts/ensure-redis.sh
command -v node >/dev/null || { echo "bench-ramp: install Node.js 18+ (apt-get install nodejs npm)" >&2; exit 1; }
cargo build --release --locked --bins >&2
(cd bench/socketio-peer && npm ci --no-audit --no-fund --silent >&2)
. scripts/bench-lib.sh
start_redis

# rtsync: two fresh sidecars ramped with the protocol $1 (rtsync = /ws,
# socketio = their own /socket.io/); then Redis is flushed.
ramp_rtsync() {
  local proto=$1; shift
  urls=(); sidecars=()
  for name in a b; do
    start_sidecar "ramp-$proto-$name" "${RTSYNC_BIN:-target/release/rtsync}"
    urls+=("$sidecar_url"); sidecars+=("$sidecar_pid")
  done
  echo "# rtsync: ramp over two sidecars ($proto)" >&2
  target/release/rtsync-bench --duration "$secs" --json --pid "${sidecars[0]},${sidecars[1]}" \
    --url "${urls[0]},${urls[1]}" ramp --proto "$proto" "$@"
  kill "${sidecars[@]}"; wait "${sidecars[@]}" 2>/dev/null || true
  redis-cli -p "$rport" flushall >/dev/null
}
ramp_rtsync rtsync "$@"
ramp_rtsync socketio "$@"

# The peer: two Socket.IO instances.
urls=(); peers=()
for name in a b; do
  port="$(free_port)"
  PORT="$port" REDIS_URL="redis://127.0.0.1:$rport" node bench/socketio-peer/server.mjs >"$work/peer-$name.log" 2>&1 &
  pids+=($!); peers+=($!)
  for _ in $(seq 1 200); do grep -q listening "$work/peer-$name.log" 2>/dev/null && break; sleep 0.05; done
  urls+=("ws://127.0.0.1:$port")
done
echo "# peer: ramp over two Socket.IO instances" >&2
target/release/rtsync-bench --duration "$secs" --json --pid "${peers[0]},${peers[1]}" \
  --url "${urls[0]},${urls[1]}" ramp --proto socketio "$@"
