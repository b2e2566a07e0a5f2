#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (redis-server, and for
# the browser tests Node.js, chromium and the npm packages), then formatting
# and lint checks, the unit and integration tests (each test starts its own
# redis-server and sidecars on free ports) and the browser tests of the demo,
# then the integration tests again against a local Redis Cluster. The
# PostgreSQL example's test needs Node.js and PostgreSQL's server binaries
# (installed here as root); RTSYNC_SKIP_POSTGRES=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-redis.sh
if [ -z "${RTSYNC_SKIP_BROWSER:-}" ]; then
  scripts/ensure-browser.sh
  # The non-JavaScript Socket.IO client's test (tests/socketio_python.rs).
  scripts/ensure-python-client.sh
  # The JavaScript client's unit tests (outbox state machine, positions).
  (cd clients/js && npm test --silent)
  scripts/check-package.sh
fi
if [ -z "${RTSYNC_SKIP_POSTGRES:-}" ] && [ -z "${RTSYNC_SKIP_BROWSER:-}" ]; then
  scripts/ensure-postgres.sh   # the PostgreSQL sink example's test (tests/postgres_sink.rs)
fi
cargo fmt --all -- --check
# No two modules import each other, directly or through others.
python3 scripts/check-module-cycles.py
cargo clippy --all-targets --locked -- -D warnings
# The fuzz targets (a crate of their own) still build against the library.
(cd fuzz && cargo check --quiet)
cargo test --locked --all-targets "$@"
# The same integration suite again on a local 3-primary Redis Cluster
# (tests that kill one Redis server are single-server only).
RTSYNC_TEST_CLUSTER=1 RTSYNC_SKIP_BROWSER=1 cargo test --locked --tests "$@"
