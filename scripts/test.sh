#!/usr/bin/env bash
# Runs the whole test suite: installs redis-server if missing, then the
# unit and integration tests (each test starts its own redis-server and
# sidecars on free ports), formatting and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-redis.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets "$@"
