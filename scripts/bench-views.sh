#!/usr/bin/env bash
# The views scenario (BENCHMARKS.md "Views"): a throwaway Redis and one
# sidecar (SIDECAR_BIN, default target/release/rtsync) in development mode,
# then `rtsync-bench views` (BENCH_BIN) with the arguments given, e.g.
#   scripts/bench-views.sh --users 1000
#   scripts/bench-views.sh --users 1000 --every-subscriber --rate 100
# DURATION (seconds of load, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench-lib.sh
source scripts/bench-lib.sh
target="${CARGO_TARGET_DIR:-target}"
start_redis
start_sidecar a "${SIDECAR_BIN:-$target/release/rtsync}"
"${BENCH_BIN:-$target/release/rtsync-bench}" --url "$sidecar_url" --pid "$sidecar_pid" \
  --duration "${DURATION:-10}" views "$@"
