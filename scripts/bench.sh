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
. scripts/bench-lib.sh
start_redis
urls=(); sidecar_pids=()
for name in a b; do
  start_sidecar "$name" target/release/rtsync
  urls+=("$sidecar_url"); sidecar_pids+=("$sidecar_pid")
done
a="${urls[0]}"; both="${urls[0]},${urls[1]}"
bench() { target/release/rtsync-bench --duration "$secs" --json --pid "${sidecar_pids[0]},${sidecar_pids[1]}" "$@"; }
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
echo "# ramp: the 10 x 20 x 2 fan-out at a rising rate until p99 >= 50 ms or a loss (5 s steps)" >&2
target/release/rtsync-bench --duration 5 --json --pid "${sidecar_pids[0]},${sidecar_pids[1]}" \
  --url "$both" ramp --start 200 --factor 1.07
echo "# presence: 10 tables x 10 watchers, one mover per table at 200 moves/s" >&2
bench --url "$both" presence
echo "# tables: 5000 tables, one subscriber and one change per second each, on one sidecar" >&2
bench --url "$a" tables --tables 5000 --writers 16
echo "# records: load_records pages of 500 on a table of 10,000 records x 6 fields" >&2
bench --url "$a" records --records 10000 --fields 6 --page 500
echo "# idle: 10000 subscribed connections on a fresh sidecar" >&2
start_sidecar idle target/release/rtsync
target/release/rtsync-bench --json --url "$sidecar_url" --pid "$sidecar_pid" idle --connections 10000
