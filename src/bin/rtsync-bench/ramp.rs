//! Ramp mode: the fan-out load at a rising change rate, step by step, until
//! a step misses the latency target or loses a delivery. The capacity is
//! the last step that held, in deliveries per second, with the servers' CPU
//! per delivery at that step (from /proc of the `--pid` processes). Each
//! step also says how much CPU the load generator itself used (its own
//! /proc/self/stat) and what share of one core that was over the step's
//! wall time: a generator near a full core (it runs one thread by default)
//! is the limit, not the servers.
//!
//! Each step is a fresh fan-out run (new tables, new connections), so a
//! step that fell behind leaves no backlog to the next. A first step at the
//! starting rate warms every system up (a JIT, caches, connection pools) and
//! is not measured; a step that misses is run once more before the ramp
//! stops, so one noisy step does not decide the capacity.

use anyhow::Result;
use serde_json::{json, Value};

use crate::proto::Proto;
use crate::report::{latency, own_cpu_secs, proc_stats};
use crate::scenarios::{fanout_run, Shape};
use crate::Args;

pub struct Ramp {
    pub proto: Proto,
    pub shape: Shape,
    /// Changes per second per writer of the first step.
    pub start: f64,
    /// Each step's rate is the previous one times this.
    pub factor: f64,
    pub max: f64,
    /// The latency target: a step holds when its p99 is below it.
    pub p99_ms: f64,
}

pub async fn ramp(args: &Args, ramp: &Ramp) -> Result<Value> {
    let mut steps = Vec::new();
    let mut held: Option<Value> = None;
    let mut rate = ramp.start.max(1.0);
    let deliveries_per_change = (ramp.shape.subscribers) as f64;
    let warm_up = fanout_run(args, ramp.proto, &ramp.shape, rate.round() as u64, 2).await?;
    if !args.json {
        eprintln!("warm-up: {} changes, not measured", warm_up.committed);
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mut retried = false;
    while rate <= ramp.max {
        let r = rate.round() as u64;
        let before: Vec<_> = args.pid.iter().map(|p| proc_stats(*p)).collect();
        let (own_before, started) = (own_cpu_secs(), std::time::Instant::now());
        let run = fanout_run(args, ramp.proto, &ramp.shape, r, args.duration).await?;
        let own = own_cpu_secs() - own_before;
        let wall = started.elapsed().as_secs_f64().max(1e-3);
        let cpu: f64 = args
            .pid
            .iter()
            .zip(&before)
            .map(|(p, b)| {
                let now = proc_stats(*p).unwrap_or_default();
                now.cpu_secs - b.unwrap_or_default().cpu_secs
            })
            .sum();
        let secs = args.duration as f64;
        let t = run.tally;
        let lat = latency(t.latencies_us);
        let p99 = lat["p99"].as_f64().unwrap_or(f64::MAX);
        let holds = t.lost == 0 && p99 < ramp.p99_ms && t.delivered > 0;
        let step = json!({
            "ratePerWriter": r,
            "changesPerSec": (run.committed as f64 / secs).round(),
            "offeredDeliveriesPerSec": (r as f64 * (ramp.shape.tables * ramp.shape.writers) as f64 * deliveries_per_change).round(),
            "deliveriesPerSec": (t.delivered as f64 / secs).round(),
            "lost": t.lost, "duplicates": t.duplicates, "latencyMs": lat,
            "serverCpuSeconds": (cpu * 100.0).round() / 100.0,
            "cpuUsPerDelivery": if t.delivered > 0 { (cpu * 1e6 / t.delivered as f64 * 100.0).round() / 100.0 } else { 0.0 },
            "generatorCpuSeconds": (own * 100.0).round() / 100.0,
            "generatorCoreShare": (own / wall * 100.0).round() / 100.0,
            "holds": holds,
        });
        if !args.json {
            eprintln!("{step}");
        }
        steps.push(step.clone());
        if !holds && !retried {
            retried = true;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        if !holds {
            break;
        }
        retried = false;
        held = Some(step);
        rate *= ramp.factor.max(1.01);
        // Let the servers finish the last step's stragglers.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Ok(json!({
        "scenario": "ramp", "proto": format!("{:?}", ramp.proto).to_lowercase(),
        "tables": ramp.shape.tables, "subscribersPerTable": ramp.shape.subscribers,
        "writersPerTable": ramp.shape.writers, "servers": args.url.len(),
        "p99TargetMs": ramp.p99_ms,
        "capacityDeliveriesPerSec": held.as_ref().map(|h| h["deliveriesPerSec"].clone()).unwrap_or(json!(0)),
        "cpuUsPerDeliveryAtCapacity": held.as_ref().map(|h| h["cpuUsPerDelivery"].clone()).unwrap_or(Value::Null),
        "p99MsAtCapacity": held.as_ref().map(|h| h["latencyMs"]["p99"].clone()).unwrap_or(Value::Null),
        "generatorCoreShareAtCapacity": held.as_ref().map(|h| h["generatorCoreShare"].clone()).unwrap_or(Value::Null),
        "steps": steps,
    }))
}
