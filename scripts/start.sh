#!/usr/bin/env bash
# Starts a local Redis (if none answers on RTS_REDIS_URL's default port) and
# one sidecar in development mode with the demo page. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-redis.sh
port="${REDIS_PORT:-6379}"
redis_pid=""
if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
  dir="$(mktemp -d)"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
  redis_pid=$!
  trap '[ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null; rm -rf "$dir"' EXIT
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
fi
export RTS_REDIS_URL="${RTS_REDIS_URL:-redis://127.0.0.1:$port}"
export RTS_AUTH="${RTS_AUTH:-none}"
export RTS_LISTEN="${RTS_LISTEN:-127.0.0.1:4000}"
export RTS_RECENT_CHANGES="${RTS_RECENT_CHANGES:-500}"
demo=()
if command -v npm >/dev/null 2>&1; then
  scripts/build-client.sh
  demo=(--demo)
  echo "demo: open http://$RTS_LISTEN/demo/?user=alice in one tab and http://$RTS_LISTEN/demo/?user=bob in another" >&2
  echo "      &view=my-tasks follows only your tasks; ?user=eli&role=intern sees only eli's tasks (a row grant)" >&2
else
  echo "npm not found: starting without the demo page (install Node.js for it)" >&2
fi
echo "rtsync on http://$RTS_LISTEN (WebSocket at ws://$RTS_LISTEN/ws), Redis at $RTS_REDIS_URL" >&2
cargo run --release --locked --bin rtsync -- "${demo[@]}" "$@"
