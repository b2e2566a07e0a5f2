#!/usr/bin/env bash
# Checks that the JavaScript client installs from `npm pack` the way an app
# would install it: packs clients/js, installs the tarball into an empty
# project, and imports it (ESM, types and the browser bundle present).
set -euo pipefail
cd "$(dirname "$0")/../clients/js"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tarball="$(npm pack --silent --pack-destination "$work" | tail -n 1)"
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --prefer-offline --loglevel=error "./$tarball" >/dev/null
test -f node_modules/@rtsync/client/dist/index.d.ts
test -f node_modules/@rtsync/client/dist/rtsync.browser.js
test ! -e node_modules/@rtsync/client/src
node --input-type=module -e '
import { RtsyncClient, LiveTable, MemoryStorage } from "@rtsync/client";
if (typeof RtsyncClient !== "function" || typeof LiveTable !== "function" || typeof MemoryStorage !== "function") process.exit(1);
'
echo "@rtsync/client installs from $tarball"
