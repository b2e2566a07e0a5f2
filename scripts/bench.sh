#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: starts a throwaway Redis and two release-built
# sidecars on free ports, runs redis-benchmark on FCALL rtsync_commit and the
# rtsync-bench scenarios, prints one JSON line per run, and cleans up.
# Usage: scripts/bench.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
scripts/ensure-redis.sh
cargo build --release --locked --bins >&2
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
urls=()
for name in a b; do
  port="$(free_port)"
  env ${workers:+TOKIO_WORKER_THREADS=$workers} RTS_AUTH=none RTS_RATE_LIMIT=1000000 RTS_LISTEN="127.0.0.1:$port" RTS_REDIS_URL="redis://127.0.0.1:$rport" \
    RTS_INSTANCE_ID="bench-$name" RTS_LOG=warn target/release/rtsync 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
  urls+=("ws://127.0.0.1:$port/ws")
done
a="${urls[0]}"; both="${urls[0]},${urls[1]}"
sidecar_pids="${pids[1]},${pids[2]}"
bench() { target/release/rtsync-bench --duration "$secs" --json --pid "$sidecar_pids" "$@"; }
echo "# redis-benchmark FCALL rtsync_commit (32 clients)" >&2
redis-benchmark -p "$rport" -n 200000 -c 32 -q FCALL rtsync_commit 2 'rts:{rb}:events' 'rts:{rb}:rec:r1' \
  '{"type":"update","entityType":"record","entityId":"r1","userId":"u"}' '[{"fieldId":"f1","newValue":1}]' '' \
  2>/dev/null | tr '\r' '\n' | grep 'requests per second' | tail -1
echo "# commit: 32 writers on one sidecar" >&2
bench --url "$a" commit --writers 32
echo "# fanout: 1 table x 20 subscribers x 1 writer at 100/s, two sidecars" >&2
bench --url "$both" fanout --tables 1 --subscribers 20 --writers 1 --rate 100
echo "# fanout: 10 tables x 20 subscribers x 2 writers at 400/s, two sidecars (target)" >&2
bench --url "$both" fanout
echo "# presence: 10 tables x 10 watchers, one mover per table at 200 moves/s" >&2
bench --url "$both" presence
echo "# tables: 5000 tables, one subscriber and one change per second each, on one sidecar" >&2
bench --url "$a" tables --tables 5000 --writers 16
echo "# records: load_records pages of 500 on a table of 10,000 records x 6 fields" >&2
bench --url "$a" records --records 10000 --fields 6 --page 500
echo "# idle: 10000 subscribed connections on a fresh sidecar" >&2
port="$(free_port)"
env ${workers:+TOKIO_WORKER_THREADS=$workers} RTS_AUTH=none RTS_RATE_LIMIT=1000000 RTS_LISTEN="127.0.0.1:$port" RTS_REDIS_URL="redis://127.0.0.1:$rport" \
  RTS_INSTANCE_ID="bench-idle" RTS_LOG=warn target/release/rtsync 2>"$work/idle.log" &
idle_pid=$!
pids+=($idle_pid)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
target/release/rtsync-bench --json --url "ws://127.0.0.1:$port/ws" --pid "$idle_pid" idle --connections 10000
