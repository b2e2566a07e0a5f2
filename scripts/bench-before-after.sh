#!/usr/bin/env bash
# Two rtsync builds side by side on the same load, runs alternating: the
# fan-out ramp over two sidecars (`rtsync-bench ramp`: capacity at p99 < 50
# ms) on /ws and on /socket.io/ (`--proto socketio`), and the commit
# scenario through one sidecar (`rtsync-bench commit`, 3 writers). A fresh Redis per measurement. Prints one JSON line per run.
# Usage: scripts/bench-before-after.sh [seconds-per-step] [runs] BEFORE_BIN AFTER_BIN
# RTSYNC_BENCH=path uses that load generator instead of building this tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-4}"; runs="${2:-3}"; shift 2
bins=("$@")
[ ${#bins[@]} -ge 1 ] || { echo "usage: $0 secs runs BIN..." >&2; exit 2; }
scripts/ensure-redis.sh
bench="${RTSYNC_BENCH:-target/release/rtsync-bench}"
[ -n "${RTSYNC_BENCH:-}" ] || cargo build --release --locked --bins >&2
. scripts/bench-lib.sh
for run in $(seq 1 "$runs"); do
  for bin in "${bins[@]}"; do
    start_redis
    urls=(); sidecars=()
    for name in a b; do
      start_sidecar "ba-$run-$name" "$bin"
      urls+=("$sidecar_url"); sidecars+=("$sidecar_pid")
    done
    ramp=$("$bench" --duration "$secs" --json --pid "${sidecars[0]},${sidecars[1]}" \
      --url "${urls[0]},${urls[1]}" ramp --proto rtsync)
    redis-cli -p "$rport" flushall >/dev/null
    sio=$("$bench" --duration "$secs" --json --pid "${sidecars[0]},${sidecars[1]}" \
      --url "${urls[0]},${urls[1]}" ramp --proto socketio)
    commit=$("$bench" --duration "$secs" --json --pid "${sidecars[0]}" \
      --url "${urls[0]}" commit --writers 3 --records 16)
    echo "{\"bin\": \"$bin\", \"run\": $run, \"ramp\": $ramp, \"socketio\": $sio, \"commit\": $commit}"
    kill "${sidecars[@]}"; wait "${sidecars[@]}" 2>/dev/null || true
    redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
  done
done
