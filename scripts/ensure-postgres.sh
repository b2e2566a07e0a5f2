#!/usr/bin/env bash
# Makes sure the PostgreSQL sink example can be tested: Debian's postgresql
# server binaries (initdb, pg_ctl; installed with apt when run as root) and
# the example's npm packages. The test starts its own server on a free port
# in a temporary directory; nothing is configured system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing postgresql with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >/dev/null 2>&1 || {
      apt-get update -q >/dev/null
      apt-get install -y -q postgresql >/dev/null
    }
  else
    echo "missing: PostgreSQL server binaries; install them (e.g. 'sudo apt-get install postgresql')," >&2
    echo "or set RTSYNC_SKIP_POSTGRES=1 to skip the PostgreSQL example's test." >&2
    exit 1
  fi
fi
(cd examples/postgres-sink && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
