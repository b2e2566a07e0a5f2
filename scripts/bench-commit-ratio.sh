#!/usr/bin/env bash
# Commits through one sidecar against what Redis alone does with the same
# call, in the same run and on the same Redis: first `redis-benchmark`
# calling `FCALL rtsync_commit` with the arguments the sidecar sends for a
# connection's edit (the record form with its history index and the user's
# undo stacks: 8 keys), `FCALL_CLIENTS` connections of `FCALL_PIPELINE`
# calls each (default 2 x writers/2, as the sidecar sends them: its commit
# connection keeps two pipelines in flight, `store::group_pipe`, holding
# the writers' commits between them); then `rtsync-bench commit` with
# `writers` writers through one sidecar (one runtime thread, as
# bench-lib.sh starts it). Runs alternate between the builds given; a fresh
# Redis per run. The FCALL rate is taken just before and just after the
# sidecar's run and averaged. One JSON line per run, then the medians per build:
# FCALL/s, commits/s, their ratio, the ack p99, and the CPU microseconds
# per commit of Redis, of the sidecar and of the load generator while the
# sidecar ran. Each run also says what else shared the cores (the load
# average at its start), how busy Redis was while the sidecar ran (CPU
# seconds per second: well under 1 means Redis waited for commits, not the
# other way round), Redis' own microseconds per `FCALL` in each phase and
# the commands Redis ran per commit in each (`INFO commandstats`, calls
# made inside the function included): a command only the sidecar's phase
# has is work beyond the commit itself.
# Default shape: 16 writers against `-c 2 -P 8` (16 calls in flight on
# each side). On a quiet machine it keeps Redis busy in both phases (0.99
# of a core while the sidecar ran, BENCHMARKS.md), so the ratio compares
# Redis' work and not how many commits are in flight (the writers are
# closed-loop: commits/s = writers / ack latency). With 8 each commit costs
# the sidecar more (fewer per Redis pipeline); 32 or 64 only lengthen the
# ack latency.
# On a shared machine, run one benchmark at a time: with builds beside it
# the ratio is mostly the scheduler's (the `load` field says so).
# Usage: scripts/bench-commit-ratio.sh [seconds] [runs] [writers] [BIN...]
#   (default BIN: target/release/rtsync, built first)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-6}"; runs="${2:-3}"; writers="${3:-16}"
shift $(($# < 3 ? $# : 3))
bins=("$@")
scripts/ensure-redis.sh >/dev/null
if [ ${#bins[@]} -eq 0 ]; then
  cargo build --release --locked --bins >&2
  bins=(target/release/rtsync)
fi
bench="${BENCH:-target/release/rtsync-bench}"
clients="${FCALL_CLIENTS:-2}"
pipeline="${FCALL_PIPELINE:-$(( (writers + 1) / 2 ))}"
. scripts/bench-lib.sh

# The sidecar's call for user bench-w0's update of field f1 of record r1
# (as MONITOR shows it), on a table of its own.
t='rts:{bench-fcall}'
header='{"type":"update","entityType":"record","entityId":"r1","tableId":"bench-fcall","baseId":"bench","userId":"bench-w0","origin":"bench-origin.1","maxRecordBytes":4194304,"answerBytes":1048576,"undo":true,"recordHistory":100,"maxEventBytes":1048576}'
fcall=(FCALL rtsync_commit 8 "$t:events" "$t:rec:r1" "$t:records" "$t:sink-floor" "$t:presence"
  "$t:rh:r1" "$t:undo:8:bench-w0" "$t:redo:8:bench-w0" "$header" '[{"fieldId":"f1","newValue":153}]'
  '' 86400000 153)

# CPU seconds (user + system) of Redis so far.
redis_cpu() {
  redis-cli -p "$rport" info cpu | tr -d '\r' |
    awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.3f", s}'
}
# Calls and microseconds per command since the last reset, as JSON
# ({"fcall": [calls, usec], ...}); then the counters start again.
redis_stats() {
  redis-cli -p "$rport" info commandstats | tr -d '\r' |
    sed -nE 's/^cmdstat_([^:]+):calls=([0-9]+),usec=([0-9]+),.*/"\1": [\2, \3]/p' |
    paste -sd, | sed 's/^/{/; s/$/}/'
  redis-cli -p "$rport" config resetstat >/dev/null
}

out="$work/runs.jsonl"
for run in $(seq 1 "$runs"); do
  for bin in "${bins[@]}"; do
    start_redis
    start_sidecar "ratio-$run" "$bin"
    # FCALL alone, just before and just after the sidecar's run (so load
    # that comes and goes on a shared machine weighs on both sides alike),
    # each about secs/2 seconds of calls; their mean is the run's rate. (The
    # CSV line's first column is the command, commas and all: rps is the
    # 7th column from the end.)
    calls=$((secs * ${FCALL_RATE_GUESS:-10000} / 2))
    fcall_rate() {
      redis-benchmark -p "$rport" -c "$clients" -P "$pipeline" -n "$calls" --csv "${fcall[@]}" |
        tail -1 | awk -F, '{print $(NF-6)}' | tr -d '"'
    }
    load=$(cut -d' ' -f1 /proc/loadavg)
    redis_stats >/dev/null
    fps1=$(fcall_rate)
    alone=$(redis_stats)
    cpu0=$(redis_cpu)
    commit=$(/usr/bin/time -f "%U %S" -o "$work/bench-cpu" "$bench" --duration "$secs" --json \
      --pid "$sidecar_pid" --url "$sidecar_url" commit --writers "$writers" --records 16)
    cpu1=$(redis_cpu)
    through=$(redis_stats)
    fps2=$(fcall_rate)
    fps=$(python3 -c "print(round(($fps1 + $fps2) / 2, 1))")
    bench_cpu=$(awk '{print $1 + $2}' "$work/bench-cpu")
    line="{\"bin\": \"$bin\", \"run\": $run, \"load\": $load, \"writers\": $writers, \"fcallClients\": $clients, \"fcallPipeline\": $pipeline, \"fcallPerSec\": $fps, \"fcallBeforeAfter\": [$fps1, $fps2], \"redisCpuSeconds\": $(python3 -c "print(round($cpu1 - $cpu0, 3))"), \"benchCpuSeconds\": $bench_cpu, \"statsAlone\": $alone, \"statsThrough\": $through, \"commit\": $commit}"
    echo "$line" | tee -a "$out"
    kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null || true
    redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
  done
done

python3 - "$out" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# Redis' microseconds per FCALL, and each command's calls per FCALL.
per_call = lambda st: round(st["fcall"][1] / max(st["fcall"][0], 1), 1)
calls_per_commit = lambda st: {k: round(v[0] / max(st["fcall"][0], 1), 2)
    for k, v in sorted(st.items()) if v[0] >= st["fcall"][0] / 100}
for b in dict.fromkeys(r["bin"] for r in rows):
    rs = [r for r in rows if r["bin"] == b]
    med = lambda f: statistics.median(f(r) for r in rs)
    n = lambda r: max(r["commit"]["commits"], 1)
    print(json.dumps({
        "bin": b, "runs": len(rs),
        "fcallPerSec": [r["fcallPerSec"] for r in rs],
        "commitsPerSec": [r["commit"]["commitsPerSec"] for r in rs],
        "ratio": [round(r["commit"]["commitsPerSec"] / r["fcallPerSec"], 3) for r in rs],
        "medianFcallPerSec": med(lambda r: r["fcallPerSec"]),
        "medianCommitsPerSec": med(lambda r: r["commit"]["commitsPerSec"]),
        "medianRatio": round(med(lambda r: r["commit"]["commitsPerSec"] / r["fcallPerSec"]), 3),
        "medianAckP99Ms": med(lambda r: r["commit"]["ackLatencyMs"]["p99"]),
        "medianRedisUsPerCommit": round(med(lambda r: r["redisCpuSeconds"] * 1e6 / n(r)), 1),
        "medianSidecarUsPerCommit": round(med(lambda r: r["commit"]["processes"][0]["cpuSeconds"] * 1e6 / n(r)), 1),
        "medianBenchUsPerCommit": round(med(lambda r: r["benchCpuSeconds"] * 1e6 / n(r)), 1),
        "load": [r["load"] for r in rs],
        "redisBusyWhileSidecar": [round(r["redisCpuSeconds"] / r["commit"]["seconds"], 2) for r in rs],
        "fcallUsAlone": med(lambda r: per_call(r["statsAlone"])),
        "fcallUsThrough": med(lambda r: per_call(r["statsThrough"])),
        "callsPerCommitAlone": calls_per_commit(rs[-1]["statsAlone"]),
        "callsPerCommitThrough": calls_per_commit(rs[-1]["statsThrough"]),
    }))
EOF
