# Sourced by the bench scripts: a throwaway Redis and rtsync sidecars on free
# ports, all killed (and their directory removed) when the script exits.
#   start_redis             -> $rport
#   start_sidecar NAME BIN  -> $sidecar_url, $sidecar_pid
# REDIS_SERVER names the server binary (default redis-server; e.g. the
# valkey-server scripts/ensure-valkey.sh prints); redis_url, when set, is
# the sidecar's RTS_REDIS_URL instead of the server on $rport.
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# Two sidecars share this machine's cores with Redis and the load generator:
# one runtime thread each (as each Node instance of the peer has one event
# loop). SIDECAR_WORKERS overrides it (empty: tokio's default, one per core).
workers="${SIDECAR_WORKERS-1}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_redis() {
  rport="$(free_port)"
  "${REDIS_SERVER:-redis-server}" --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
}
start_sidecar() {
  local name=$1 bin=$2 port
  port="$(free_port)"
  env ${workers:+TOKIO_WORKER_THREADS=$workers} RTS_AUTH=none RTS_RATE_LIMIT=1000000 \
    RTS_LISTEN="127.0.0.1:$port" RTS_REDIS_URL="${redis_url:-redis://127.0.0.1:$rport}" \
    RTS_INSTANCE_ID="bench-$name" RTS_LOG=warn "$bin" 2>"$work/$name.log" &
  sidecar_pid=$!
  pids+=($sidecar_pid)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
  sidecar_url="ws://127.0.0.1:$port/ws"
}
