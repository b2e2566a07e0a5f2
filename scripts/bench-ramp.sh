#!/usr/bin/env bash
# Capacity at the latency target, rtsync and its Socket.IO peer in one run:
# one throwaway Redis; two release-built rtsync sidecars ramped by
# `rtsync-bench ramp`; then (Redis flushed) two instances of the Socket.IO 4
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
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# Two sidecars share this machine's cores with Redis and the load generator:
# one runtime thread each (as each Node instance of the peer has one event
# loop). SIDECAR_WORKERS overrides it (empty: tokio's default, one per core).
workers="${SIDECAR_WORKERS-1}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport="$(free_port)"
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done

# rtsync: two sidecars.
urls=(); sidecars=()
for name in a b; do
  port="$(free_port)"
  env ${workers:+TOKIO_WORKER_THREADS=$workers} RTS_AUTH=none RTS_RATE_LIMIT=1000000 RTS_LISTEN="127.0.0.1:$port" RTS_REDIS_URL="redis://127.0.0.1:$rport" \
    RTS_INSTANCE_ID="ramp-$name" RTS_LOG=error "${RTSYNC_BIN:-target/release/rtsync}" 2>"$work/$name.log" &
  pids+=($!); sidecars+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
  urls+=("ws://127.0.0.1:$port/ws")
done
echo "# rtsync: ramp over two sidecars" >&2
target/release/rtsync-bench --duration "$secs" --json --pid "${sidecars[0]},${sidecars[1]}" \
  --url "${urls[0]},${urls[1]}" ramp --proto rtsync "$@"
kill "${sidecars[@]}"; wait "${sidecars[@]}" 2>/dev/null || true
redis-cli -p "$rport" flushall >/dev/null

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
