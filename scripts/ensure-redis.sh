#!/usr/bin/env bash
# Makes sure redis-server (7.0 or newer, for Redis Functions) is installed.
# Installs Debian's package when run as root; otherwise says what to run.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing redis-server with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q redis-server >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q redis-server >/dev/null
  }
  exit 0
fi
echo "redis-server (7.0+) is missing: run 'sudo apt-get install redis-server' (Debian/Ubuntu)" >&2
echo "or 'brew install redis' (macOS), then try again." >&2
exit 1
