//! Numbers for the report: percentiles, and CPU time and memory of the
//! sidecar processes (from /proc, so the bench must run on their machine).

use serde_json::{json, Value};

/// Nearest-rank percentile of sorted microsecond samples, in milliseconds.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

pub fn latency(mut samples: Vec<u64>) -> Value {
    samples.sort_unstable();
    json!({"p50": pct(&samples, 50.0), "p90": pct(&samples, 90.0), "p99": pct(&samples, 99.0),
           "max": pct(&samples, 100.0), "samples": samples.len()})
}

/// CPU seconds (user + system) and RSS of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub cpu_secs: f64,
    pub rss_kb: u64,
    pub peak_rss_kb: u64,
}

pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    stats_at(&format!("/proc/{pid}"))
}

/// The load generator's own CPU seconds (user + system, all its threads),
/// so a report can tell the servers' limit from the generator's.
pub fn own_cpu_secs() -> f64 {
    stats_at("/proc/self").map_or(0.0, |s| s.cpu_secs)
}

fn stats_at(dir: &str) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let kb = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcStats {
        cpu_secs: (utime + stime) / 100.0,
        rss_kb: kb("VmRSS:"),
        peak_rss_kb: kb("VmHWM:"),
    })
}

/// CPU seconds used between two snapshots and the peak RSS, per pid.
pub fn proc_delta(pids: &[u32], before: &[Option<ProcStats>]) -> Value {
    let rows: Vec<Value> = pids
        .iter()
        .zip(before)
        .map(|(pid, b)| {
            let now = proc_stats(*pid).unwrap_or_default();
            let b = b.unwrap_or_default();
            json!({"pid": pid, "cpuSeconds": ((now.cpu_secs - b.cpu_secs) * 100.0).round() / 100.0,
                   "rssMiB": now.rss_kb / 1024, "peakRssMiB": now.peak_rss_kb / 1024})
        })
        .collect();
    json!(rows)
}
