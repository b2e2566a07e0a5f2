#!/usr/bin/env bash
# Builds the JavaScript client (clients/js/dist: ESM, types and a browser
# bundle) and copies the bundle the demo page needs to demo/rtsync.js.
set -euo pipefail
cd "$(dirname "$0")/.."
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null && npm run --silent build >/dev/null)
cp clients/js/dist/rtsync.browser.js demo/rtsync.js
