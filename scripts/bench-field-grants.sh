#!/usr/bin/env bash
# Field-level grants' cost on the fan-out (BENCHMARKS.md): 10 tables × 20
# subscribers × 2 writers over two sidecars, every change writing a stamp
# and four more fields, runs alternating between all subscribers reading
# every field (`--classes 1`) and 3 permission classes (`--classes 3`:
# everything / no salary / no salary nor phone). A fresh Redis and fresh
# sidecars per run. Prints one JSON line per run with the sidecars' CPU
# seconds per 1000 deliveries and the fan-out frames built per delivered
# group (from their /metrics).
# Usage: scripts/bench-field-grants.sh [seconds] [runs] [rate-per-writer]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; runs="${2:-3}"; rate="${3:-250}"
scripts/ensure-redis.sh
cargo build --release --locked --bins >&2
. scripts/bench-lib.sh
bin=target/release/rtsync
sum_metric() { # sum of a metric's series over the sidecars' /metrics
  local name=$1; shift
  for u in "$@"; do curl -sf "$u/metrics"; done | awk -v n="$name" 'index($0, n) == 1 { s += $NF } END { printf "%d", s }'
}
for run in $(seq 1 "$runs"); do
  for classes in 1 3; do
    start_redis
    urls=(); sidecars=(); http=()
    for name in a b; do
      start_sidecar "fg-$run-$classes-$name" "$bin"
      urls+=("$sidecar_url"); sidecars+=("$sidecar_pid"); http+=("${sidecar_url/ws:/http:}")
    done
    http=("${http[@]%/ws}")
    out=$(target/release/rtsync-bench --duration "$secs" --json --pid "${sidecars[0]},${sidecars[1]}" \
      --url "${urls[0]},${urls[1]}" fanout --tables 10 --subscribers 20 --writers 2 --rate "$rate" --classes "$classes")
    frames=$(sum_metric rtsync_fanout_frames_built_total "${http[@]}")
    groups=$(sum_metric rtsync_delivery_batch_size_count "${http[@]}")
    echo "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
cpu = sum(p["cpuSeconds"] for p in r["processes"])
frames, groups, classes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(json.dumps({"classes": classes, "run": int(sys.argv[4]), "deliveriesPerSec": r["deliveriesPerSec"],
  "lost": r["lost"], "duplicates": r["duplicates"], "p50Ms": r["latencyMs"]["p50"], "p99Ms": r["latencyMs"]["p99"],
  "sidecarCpuSeconds": round(cpu, 2), "cpuMsPer1000Deliveries": round(cpu * 1e6 / max(r["deliveries"], 1), 2),
  "framesBuilt": frames, "deliveryGroups": groups, "framesPerGroup": round(frames / max(groups, 1), 2)}))
' "$frames" "$groups" "$classes" "$run"
    kill "${sidecars[@]}"; wait "${sidecars[@]}" 2>/dev/null || true
    redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
  done
done
