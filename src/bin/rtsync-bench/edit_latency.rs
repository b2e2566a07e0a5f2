//! Edit-to-screen latency: what a user on a quiet table waits between
//! making an edit and seeing it on a collaborator's screen. One writer on
//! the first server sends `record_change` at a steady rate (100 edits/s by
//! default), stamped with its send time; one reader subscribed to the same
//! table on another server (the second URL, or the first when only one is
//! given) records when each event arrives. The report gives p50/p99 from
//! send to receipt, and loss, for either protocol, so the same command
//! measures rtsync's `/ws`, its `/socket.io/` and the Socket.IO peer.
//!
//! A short warm-up run on a table of its own comes first and is not
//! measured (connection pools, caches, a JIT on the peer's side).

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::client::{all_tables, now_us};
use crate::load::{self, tally};
use crate::proto::Proto;
use crate::report::{latency, own_cpu_secs};
use crate::Args;

/// Seconds of the unmeasured warm-up run.
const WARM_UP_SECS: u64 = 2;

pub async fn edit_latency(args: &Args, proto: Proto, rate: f64) -> Result<Value> {
    run(args, proto, rate, WARM_UP_SECS).await?;
    let own_before = own_cpu_secs();
    let (written, t) = run(args, proto, rate, args.duration).await?;
    let secs = args.duration as f64;
    Ok(json!({
        "scenario": "edit-latency", "proto": format!("{proto:?}").to_lowercase(),
        "editsPerSec": rate, "servers": args.url.len(), "edits": written,
        "received": t.delivered, "lost": t.lost, "duplicates": t.duplicates,
        "latencyMs": latency(t.latencies_us),
        "generatorCoreShare": ((own_cpu_secs() - own_before) / secs * 100.0).round() / 100.0,
    }))
}

/// One writer and one reader on a fresh table for `secs` seconds: the
/// edits the server committed, and what the reader got.
async fn run(args: &Args, proto: Proto, rate: f64, secs: u64) -> Result<(u64, load::Tally)> {
    let table = format!("bench-edit-{:x}", now_us());
    let writer_url = &args.url[0];
    let reader_url = args.url.get(1).unwrap_or(writer_url);
    let secret = args.secret.as_deref();
    let reader = proto
        .subscriber(reader_url, secret, "reader", &table, &all_tables())
        .await?;
    let ws = proto
        .connect(writer_url, secret, "writer", &all_tables())
        .await?;
    let written = load::written(1);
    tokio::time::sleep(load::SUBSCRIPTION_SETTLE).await;
    let stop = Instant::now() + Duration::from_secs(secs);
    let sub = load::subscriber(
        proto,
        reader,
        0,
        written.clone(),
        stop,
        Duration::from_secs(10),
    );
    load::writer(
        proto,
        ws,
        vec![(0, table)],
        rate,
        written.clone(),
        stop,
        false,
    )
    .await??;
    let t = tally(vec![sub], &written).await?;
    Ok((written.total(), t))
}
