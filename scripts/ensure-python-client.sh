#!/usr/bin/env bash
# Makes the virtualenv of the Python Socket.IO client test
# (tests/socketio/.venv, python-socketio pinned in
# tests/socketio/requirements.txt, from PyPI). Needs python3 with its venv
# module (Debian: python3-venv, installed with apt when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=tests/socketio/.venv
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import socketio" 2>/dev/null; then
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing python3-venv with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q python3-venv >/dev/null 2>&1 || {
      apt-get update -q >/dev/null
      apt-get install -y -q python3-venv >/dev/null
    }
  else
    echo "missing: python3 with venv; install it (e.g. 'sudo apt-get install python3-venv')," >&2
    echo "or set RTSYNC_SKIP_BROWSER=1 to skip the client tests." >&2
    exit 1
  fi
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/socketio/requirements.txt
