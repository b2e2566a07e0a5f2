//! `rtsync-bench`: a load generator that drives real WebSocket clients
//! against running sidecars and reports throughput, delivery latency, loss
//! and duplicates, as a table and as JSON.
//!
//! Scenarios:
//! - `commit`: W writers send changes as fast as acks come back.
//! - `fanout`: T tables × S subscribers × W writers per table at R changes/s
//!   each, spread round-robin over the given sidecars. Latency is from the
//!   writer's send to the subscriber's receipt (both on this machine's clock).
//!
//! Sidecars must run with `RTS_AUTH=none` (or pass `--secret` for HS256).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(name = "rtsync-bench", about = "Load generator for rtsync sidecars")]
struct Args {
    /// Sidecar WebSocket URLs (comma-separated), e.g. ws://127.0.0.1:4000/ws
    #[arg(long, default_value = "ws://127.0.0.1:4000/ws", value_delimiter = ',')]
    url: Vec<String>,
    /// HS256 secret to sign tokens with; without it the dev form is used.
    #[arg(long, env = "RTS_JWT_SECRET")]
    secret: Option<String>,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// Maximum commit throughput.
    Commit {
        #[arg(long, default_value_t = 32)]
        writers: usize,
        #[arg(long, default_value_t = 16)]
        records: usize,
    },
    /// Fan-out latency and loss.
    Fanout {
        #[arg(long, default_value_t = 10)]
        tables: usize,
        #[arg(long, default_value_t = 20)]
        subscribers: usize,
        #[arg(long, default_value_t = 2)]
        writers: usize,
        /// Changes per second per writer.
        #[arg(long, default_value_t = 400)]
        rate: u64,
    },
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn encode(frame: &Value) -> Result<Message> {
    Ok(Message::Binary(rmp_serde::to_vec_named(frame)?.into()))
}

fn decode(msg: &Message) -> Option<Value> {
    match msg {
        Message::Binary(b) => rmp_serde::from_slice(b).ok(),
        Message::Text(t) => serde_json::from_str(t).ok(),
        _ => None,
    }
}

fn token(secret: &str, user: &str) -> Result<String> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp, "tables": {"*": "rw"}}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Connects and authenticates; waits for the ack.
async fn connect(url: &str, secret: Option<&str>, user: &str) -> Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connect {url}"))?;
    let auth = match secret {
        Some(s) => json!({"token": token(s, user)?}),
        None => json!({"userId": user, "userName": user}),
    };
    ws.send(encode(&json!(["authenticate", auth, 0]))?).await?;
    wait_ack(&mut ws, 0).await?;
    Ok(ws)
}

async fn wait_ack(ws: &mut Ws, rid: u64) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .context("timed out waiting for an ack")?
            .context("connection closed")??;
        let Some(v) = decode(&msg) else { continue };
        if v[2].as_u64() == Some(rid) {
            match v[0].as_str() {
                Some("ack") => return Ok(v[1].clone()),
                Some("error") => bail!("request {rid} failed: {}", v[1]),
                _ => {}
            }
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let report = match args.scenario.clone() {
        Scenario::Commit { writers, records } => commit(&args, writers, records).await?,
        Scenario::Fanout {
            tables,
            subscribers,
            writers,
            rate,
        } => fanout(&args, tables, subscribers, writers, rate).await?,
    };
    if !args.json {
        if let Some(obj) = report.as_object() {
            for (k, v) in obj {
                println!("{k:<24} {v}");
            }
        }
    }
    println!("{report}");
    Ok(())
}

async fn commit(args: &Args, writers: usize, records: usize) -> Result<Value> {
    let committed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let stop = Instant::now() + Duration::from_secs(args.duration);
    let mut handles = Vec::new();
    for w in 0..writers {
        let url = args.url[w % args.url.len()].clone();
        let mut ws = connect(&url, args.secret.as_deref(), &format!("bench-w{w}")).await?;
        let committed = committed.clone();
        let latencies = latencies.clone();
        handles.push(tokio::spawn(async move {
            let mut rid = 1u64;
            let mut local = Vec::new();
            while Instant::now() < stop {
                let record = format!("r{}", rid as usize % records.max(1));
                let frame = json!(["record_change", {
                    "type": "update", "recordId": record, "tableId": format!("bench-commit-{}", w % 4),
                    "baseId": "bench", "changes": [{"fieldId": "f1", "newValue": rid}]}, rid]);
                let sent = Instant::now();
                ws.send(encode(&frame)?).await?;
                wait_ack(&mut ws, rid).await?;
                local.push(sent.elapsed().as_micros() as u64);
                committed.fetch_add(1, Ordering::Relaxed);
                rid += 1;
            }
            latencies.lock().await.extend(local);
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for h in handles {
        h.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().await.clone();
    lat.sort_unstable();
    let n = committed.load(Ordering::Relaxed);
    Ok(json!({
        "scenario": "commit", "writers": writers, "seconds": secs,
        "commits": n, "commitsPerSec": (n as f64 / secs).round(),
        "ackLatencyMs": {"p50": pct(&lat, 50.0), "p90": pct(&lat, 90.0), "p99": pct(&lat, 99.0), "max": pct(&lat, 100.0)},
    }))
}

struct SubResult {
    table: usize,
    ids: Vec<String>,
    latencies_us: Vec<u64>,
}

async fn fanout(
    args: &Args,
    tables: usize,
    subscribers: usize,
    writers: usize,
    rate: u64,
) -> Result<Value> {
    let run = format!("{:x}", now_us());
    let table_id = |t: usize| format!("bench-{run}-{t}");
    let mut n = 0usize;
    let mut next_url = || {
        n += 1;
        args.url[n % args.url.len()].clone()
    };
    // Subscribers first, so they see every change.
    let mut subs = Vec::new();
    for t in 0..tables {
        for s in 0..subscribers {
            let mut ws = connect(
                &next_url(),
                args.secret.as_deref(),
                &format!("bench-s{t}-{s}"),
            )
            .await?;
            ws.send(encode(
                &json!(["subscribe_to_table", {"tableId": table_id(t), "viewId": "v"}, 1]),
            )?)
            .await?;
            wait_ack(&mut ws, 1).await?;
            subs.push((t, ws));
        }
    }
    let written: Arc<Vec<AtomicU64>> = Arc::new((0..tables).map(|_| AtomicU64::new(0)).collect());
    let stop = Instant::now() + Duration::from_secs(args.duration);
    let drain_until = stop + Duration::from_secs(5);
    let mut sub_handles = Vec::new();
    for (t, mut ws) in subs {
        let written = written.clone();
        sub_handles.push(tokio::spawn(async move {
            let mut r = SubResult {
                table: t,
                ids: Vec::new(),
                latencies_us: Vec::new(),
            };
            loop {
                let now = Instant::now();
                if now > drain_until {
                    break;
                }
                // After the load stops, leave once everything written arrived.
                if now > stop && r.ids.len() as u64 >= written[t].load(Ordering::Relaxed) {
                    break;
                }
                let msg = match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(_) => break,
                    Err(_) => continue,
                };
                let Some(v) = decode(&msg) else { continue };
                let received = now_us();
                let events: Vec<Value> = match v[0].as_str() {
                    Some("record_change") => vec![v[1].clone()],
                    Some("batch_changes") => v[1].as_array().cloned().unwrap_or_default(),
                    _ => continue,
                };
                for e in events {
                    if let Some(sent) = e["changes"][0]["newValue"]["sentUs"].as_u64() {
                        r.latencies_us.push(received.saturating_sub(sent));
                    }
                    r.ids.push(e["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            r
        }));
    }
    let mut writer_handles = Vec::new();
    for t in 0..tables {
        for w in 0..writers {
            let ws = connect(
                &next_url(),
                args.secret.as_deref(),
                &format!("bench-w{t}-{w}"),
            )
            .await?;
            let table = table_id(t);
            let written = written.clone();
            writer_handles.push(tokio::spawn(async move {
                let period = Duration::from_micros(1_000_000 / rate.max(1));
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut rid = 1u64;
                // Acks are read concurrently so sends keep the rate.
                let (mut tx, mut rx) = ws.split();
                let reader = tokio::spawn(async move {
                    let mut acked = 0u64;
                    while let Some(Ok(msg)) = rx.next().await {
                        if let Some(v) = decode(&msg) {
                            if v[0] == "ack" {
                                acked += 1;
                            }
                        }
                    }
                    acked
                });
                while Instant::now() < stop {
                    tick.tick().await;
                    let frame = json!(["record_change", {
                        "type": "update", "recordId": format!("r{w}"), "tableId": table, "baseId": "bench",
                        "changes": [{"fieldId": "f", "newValue": {"sentUs": now_us()}}]}, rid]);
                    tx.send(encode(&frame)?).await?;
                    written[t].fetch_add(1, Ordering::Relaxed);
                    rid += 1;
                }
                let _ = tx.close().await;
                reader.abort();
                anyhow::Ok(())
            }));
        }
    }
    for h in writer_handles {
        h.await??;
    }
    let mut lat = Vec::new();
    let mut delivered = 0u64;
    let mut lost = 0u64;
    let mut dups = 0u64;
    for h in sub_handles {
        let r = h.await?;
        let expected = written[r.table].load(Ordering::Relaxed);
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for id in &r.ids {
            *seen.entry(id).or_default() += 1;
        }
        dups += seen.values().map(|c| u64::from(c - 1)).sum::<u64>();
        lost += expected.saturating_sub(seen.len() as u64);
        delivered += r.ids.len() as u64;
        lat.extend(r.latencies_us);
    }
    lat.sort_unstable();
    let total_written: u64 = written.iter().map(|w| w.load(Ordering::Relaxed)).sum();
    let secs = args.duration as f64;
    Ok(json!({
        "scenario": "fanout", "tables": tables, "subscribersPerTable": subscribers,
        "writersPerTable": writers, "ratePerWriter": rate, "sidecars": args.url.len(),
        "changesSent": total_written, "changesPerSec": (total_written as f64 / secs).round(),
        "deliveries": delivered, "deliveriesPerSec": (delivered as f64 / secs).round(),
        "lost": lost, "duplicates": dups,
        "latencyMs": {"p50": pct(&lat, 50.0), "p90": pct(&lat, 90.0), "p99": pct(&lat, 99.0), "max": pct(&lat, 100.0)},
    }))
}
