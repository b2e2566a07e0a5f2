#!/usr/bin/env bash
# Commit latency while one reader hammers `load_records` at its limits
# (250 copies of one 900 KB record per request), for one or more rtsync
# builds side by side: for each build a fresh Redis and one sidecar, 3
# writers, and the same run without the reader. Runs alternate between the
# builds; prints one JSON line per run.
# Usage: scripts/bench-read-beside-commits.sh [seconds] [runs] [rtsync-binary...]
# (default: target/release/rtsync)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; runs="${2:-3}"; shift 2 || shift $# || true
bins=("$@"); [ ${#bins[@]} -gt 0 ] || bins=(target/release/rtsync)
scripts/ensure-redis.sh
cargo build --release --locked --bins >&2
. scripts/bench-lib.sh
for run in $(seq 1 "$runs"); do
  for bin in "${bins[@]}"; do
    for readers in 0 1; do
      start_redis
      start_sidecar "read-$run" "$bin"
      out=$(target/release/rtsync-bench --duration "$secs" --json --url "$sidecar_url" \
        commit --writers 3 --records 16 --readers "$readers")
      echo "{\"bin\": \"$bin\", \"run\": $run, \"result\": $out}"
      kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null || true
      redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
    done
  done
done
