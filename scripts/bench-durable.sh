#!/usr/bin/env bash
# Durable acknowledgements' cost (BENCHMARKS.md): commit throughput and ack
# latency through one sidecar with RTS_DURABLE_WRITES=none and =replica,
# runs alternating, against a primary with one replica on this machine (a
# fresh pair per run). Prints one JSON line per run.
# Usage: scripts/bench-durable.sh [seconds] [runs] [writers]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; runs="${2:-3}"; writers="${3:-32}"
scripts/ensure-redis.sh
cargo build --release --locked --bins >&2
. scripts/bench-lib.sh
bin=target/release/rtsync
for run in $(seq 1 "$runs"); do
  for mode in none replica; do
    start_redis
    primary="$rport"
    replica="$(free_port)"
    redis-server --port "$replica" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
      --dbfilename "replica-$run-$mode.rdb" --replicaof 127.0.0.1 "$primary" >/dev/null &
    pids+=($!)
    for _ in $(seq 1 200); do
      redis-cli -p "$replica" info replication 2>/dev/null | grep -q "master_link_status:up" && break
      sleep 0.05
    done
    rport="$primary"
    RTS_DURABLE_WRITES="$mode" start_sidecar "dur-$run-$mode" "$bin"
    out=$(target/release/rtsync-bench --duration "$secs" --json --pid "$sidecar_pid" \
      --url "$sidecar_url" commit --writers "$writers" --records 16)
    echo "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(json.dumps({"mode": sys.argv[1], "run": int(sys.argv[2]), "writers": r["writers"],
  "commitsPerSec": r["commitsPerSec"], "failed": r["failed"],
  "ackP50Ms": r["ackLatencyMs"]["p50"], "ackP99Ms": r["ackLatencyMs"]["p99"]}))
' "$mode" "$run"
    kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null || true
    redis-cli -p "$replica" shutdown nosave >/dev/null 2>&1 || true
    redis-cli -p "$primary" shutdown nosave >/dev/null 2>&1 || true
  done
done
