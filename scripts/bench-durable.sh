#!/usr/bin/env bash
# Durable acknowledgements' cost (BENCHMARKS.md): commit throughput and ack
# latency through one sidecar with each RTS_DURABLE_WRITES mode, runs
# alternating, against a fresh primary with one replica per run on this
# machine, or (CLUSTER=1) a fresh local 3-primary cluster with one replica
# per primary. The primary persists to its AOF (`appendfsync always`) only
# in the `aof` runs. Prints one JSON line per run.
# Usage: scripts/bench-durable.sh [seconds] [runs] [writers]
#   MODES="none replica aof"  the modes (default "none replica"; `aof` needs
#                             WAITAOF: Redis 7.2+ or Valkey)
#   REDIS_SERVER=path         the server binary (default redis-server), e.g.
#                             REDIS_SERVER=$(scripts/ensure-valkey.sh)
#   CLUSTER=1                 a Redis Cluster instead of one primary
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; runs="${2:-3}"; writers="${3:-32}"
modes="${MODES:-none replica}"
server="${REDIS_SERVER:-redis-server}"
scripts/ensure-redis.sh
cargo build --release --locked --bins >&2
. scripts/bench-lib.sh
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/rtsync"
pinged() { redis-cli -p "$1" ping >/dev/null 2>&1; }
synced() { redis-cli -p "$1" info replication 2>/dev/null | grep -q "$2"; }
wait_until() { for _ in $(seq 1 400); do "$@" && return 0; sleep 0.05; done; echo "timed out: $*" >&2; return 1; }
# node PORT AOF [args...]: one server in its own directory.
node() {
  local port=$1 aof=$2; shift 2
  mkdir -p "$work/$port"
  "$server" --port "$port" --bind 127.0.0.1 --save "" --appendonly "$aof" --appendfsync always \
    --repl-diskless-sync-delay 0 --dir "$work/$port" "$@" >/dev/null &
  pids+=($!)
  wait_until pinged "$port"
}
# A primary and a replica -> $ports, $redis_url.
start_pair() {
  local primary replica
  primary="$(free_port)"; replica="$(free_port)"
  node "$primary" "$1"
  node "$replica" no --replicaof 127.0.0.1 "$primary"
  wait_until synced "$replica" "master_link_status:up"
  ports=("$primary" "$replica"); redis_url="redis://127.0.0.1:$primary"; cluster=""
}
# Three primaries with a replica each -> $ports, $redis_url.
start_cluster() {
  ports=()
  while [ "${#ports[@]}" -lt 6 ]; do
    local p; p="$(free_port)"
    [ "$p" -lt 55535 ] || continue
    node "$p" "$1" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
    ports+=("$p")
  done
  local seeds=() urls=()
  for p in "${ports[@]}"; do seeds+=("127.0.0.1:$p"); urls+=("redis://127.0.0.1:$p"); done
  redis-cli --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  for p in "${ports[@]}"; do
    wait_until bash -c "redis-cli -p $p cluster info | grep -q cluster_state:ok"
    wait_until bash -c "redis-cli -p $p info replication | grep -Eq 'role:master|master_link_status:up'"
  done
  redis_url="$(IFS=,; echo "${urls[*]}")"; cluster=true
}
for run in $(seq 1 "$runs"); do
  for mode in $modes; do
    aof=no; [ "$mode" = aof ] && aof=yes
    if [ -n "${CLUSTER:-}" ]; then start_cluster "$aof"; else start_pair "$aof"; fi
    RTS_DURABLE_WRITES="$mode" RTS_REDIS_CLUSTER="${cluster:-false}" start_sidecar "dur-$run-$mode" "$bin"
    out=$("$target/release/rtsync-bench" --duration "$secs" --json --pid "$sidecar_pid" \
      --url "$sidecar_url" commit --writers "$writers" --records 16)
    echo "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(json.dumps({"server": sys.argv[3], "cluster": sys.argv[4] == "true", "mode": sys.argv[1],
  "run": int(sys.argv[2]), "writers": r["writers"],
  "commitsPerSec": r["commitsPerSec"], "failed": r["failed"],
  "ackP50Ms": r["ackLatencyMs"]["p50"], "ackP99Ms": r["ackLatencyMs"]["p99"]}))
' "$mode" "$run" "$("$server" --version | cut -d' ' -f1-3)" "${cluster:-false}"
    kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null || true
    for p in "${ports[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  done
done
