#!/usr/bin/env bash
# Makes sure the JavaScript client is built and the browser tests can run:
# Node.js and npm, Debian's chromium (installed with apt when run as root),
# and the npm packages of clients/js and tests/browser.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update -q >/dev/null
      apt-get install -y -q "${missing[@]}" >/dev/null
    }
  else
    echo "missing: ${missing[*]}; install them (e.g. 'sudo apt-get install ${missing[*]}')," >&2
    echo "or set RTSYNC_SKIP_BROWSER=1 to skip the browser tests." >&2
    exit 1
  fi
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
(cd tests/socketio && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
scripts/build-client.sh
