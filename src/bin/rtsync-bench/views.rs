//! The `views` scenario (PROTOCOL.md 3.5): what a filtered view costs the
//! sidecars when every user follows only their own records.
//!
//! Data flow: a table of `records` records is seeded through the HTTP seed
//! route (`POST /api/v1/sync/tables/:t/records`, no events), each owned by
//! one of `users` users (`owner` = `u<i>`); the view `mine` (`owner eq
//! $user`) is stored with `PUT /api/v1/sync/tables/:t/views/mine`. Every
//! user connects with their own id (the token's `sub`) and subscribes to
//! `mine`; `unfiltered` more users subscribe to the whole table. Writers then
//! send `rate` changes a second to random records (a stamped field, and
//! every `reassign`-th change a new owner, so records enter and leave
//! views). Subscribers count what reaches them: change events, and
//! `record_entered_view` / `record_left_view`. The report gives deliveries
//! per change (≈ 1 owner + `unfiltered` when the sidecar matches by index)
//! and the sidecars' CPU per change during the load (from `--pid`).
//!
//! `--every-subscriber` is the comparison: every user subscribes to the
//! whole table and would filter on their side, so each change goes to
//! every connection (what a per-subscriber check costs in deliveries, and
//! what rtsync did before views).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{
    ack_committed, all_tables, answer_rid, connect, encode, event_name, events, now_us, wait_ack,
    Ws,
};
use crate::report::{latency, proc_stats};
use crate::Args;

/// The shape of one `views` run (its command-line arguments).
#[derive(clap::Args, Clone)]
pub struct ViewsShape {
    /// Users, each following the view of their own records.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Subscribers of the whole table.
    #[arg(long, default_value_t = 20)]
    pub unfiltered: usize,
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Changes per second, all writers together.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Every n-th change gives its record a new owner (0: never).
    #[arg(long, default_value_t = 10)]
    pub reassign: u64,
    /// The comparison: every user subscribes to the whole table, so every
    /// change goes to every subscriber.
    #[arg(long)]
    pub every_subscriber: bool,
    /// The sidecars' API token (seed and view routes), if one is set.
    #[arg(long, env = "RTS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// The view every user follows: their own records.
const VIEW: &str = "mine";

/// What one subscriber counted.
#[derive(Default)]
struct Seen {
    changes: u64,
    entered: u64,
    left: u64,
    latencies_us: Vec<u64>,
    /// The sidecar closed the connection before the load ended (a slow consumer).
    closed_early: bool,
}

fn owner(record: usize, users: usize) -> String {
    format!("u{}", record % users.max(1))
}

/// The sidecar's HTTP base for a WebSocket URL `ws://host:port/ws`.
fn http_base(ws_url: &str) -> String {
    let base = ws_url.trim_end_matches('/').trim_end_matches("/ws");
    base.replacen("ws://", "http://", 1)
        .replacen("wss://", "https://", 1)
}

fn authed(req: reqwest::RequestBuilder, token: &Option<String>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// Seeds the records (1000 per request) and stores the view's filter.
async fn seed(args: &Args, shape: &ViewsShape, table: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let base = http_base(&args.url[0]);
    for start in (0..shape.records).step_by(1000) {
        let records: Vec<Value> = (start..(start + 1000).min(shape.records))
            .map(|r| {
                json!({"recordId": format!("r{r:06}"), "version": 1,
                "fields": {"owner": owner(r, shape.users), "task": format!("task {r}"), "n": 0}})
            })
            .collect();
        let url = format!("{base}/api/v1/sync/tables/{table}/records");
        let res = authed(http.post(&url), &shape.api_token)
            .json(&json!({"records": records}))
            .send()
            .await
            .context("seed records")?;
        if !res.status().is_success() {
            bail!(
                "seed {url}: {} {}",
                res.status(),
                res.text().await.unwrap_or_default()
            );
        }
    }
    if shape.every_subscriber {
        return Ok(()); // nobody follows the view
    }
    let url = format!("{base}/api/v1/sync/tables/{table}/views/{VIEW}");
    let filter = json!({"filter": {"field": "owner", "op": "eq", "value": "$user"}});
    let res = authed(http.put(&url), &shape.api_token)
        .json(&filter)
        .send()
        .await
        .context("store the view")?;
    if !res.status().is_success() {
        bail!(
            "PUT {url}: {} {}",
            res.status(),
            res.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Connects `user` and subscribes to the table, through `view` or whole.
async fn join(url: &str, args: &Args, user: &str, table: &str, view: Option<&str>) -> Result<Ws> {
    let mut ws = connect(url, args.secret.as_deref(), user).await?;
    let mut sub = json!({"tableId": table});
    if let Some(v) = view {
        sub["viewId"] = json!(v);
    }
    ws.send(encode(&json!(["subscribe_to_table", sub, 1]))?)
        .await?;
    wait_ack(&mut ws, 1).await?;
    Ok(ws)
}

/// Counts what reaches one subscriber until `until`, then while frames
/// still come (a second apart at most, 20 s at most): a loaded generator
/// may read behind the sidecar, and what it has not read yet still counts.
fn count(mut ws: Ws, until: Instant) -> JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let last = until + Duration::from_secs(20);
        loop {
            let now = Instant::now();
            if now > last {
                break;
            }
            let wait = until
                .saturating_duration_since(now)
                .max(Duration::from_secs(1));
            let msg = match tokio::time::timeout(wait, ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => b,
                Ok(Some(Ok(_))) => continue,
                Err(_) if Instant::now() < until => continue,
                Err(_) => break,
                Ok(_) => {
                    seen.closed_early = Instant::now() < until;
                    break;
                }
            };
            match event_name(&msg) {
                Some("record_entered_view") => seen.entered += 1,
                Some("record_left_view") => seen.left += 1,
                Some(name @ ("record_change" | "batch_changes")) => {
                    let received = now_us();
                    // Counted apart from the stamps: an owner change's value
                    // is not a stamp, and `events` skips a frame it cannot read.
                    seen.changes += event_count(name, &msg);
                    for e in events(&msg) {
                        if let Some(sent) = e.sent_us() {
                            seen.latencies_us.push(received.saturating_sub(sent));
                        }
                    }
                }
                _ => {}
            }
        }
        let _ = ws.close(None).await;
        seen
    })
}

/// Change events in a `record_change` (one) or `batch_changes` frame.
fn event_count(name: &str, frame: &[u8]) -> u64 {
    use serde::de::IgnoredAny;
    if name == "record_change" {
        return 1;
    }
    rmp_serde::from_slice::<(IgnoredAny, Vec<IgnoredAny>)>(frame)
        .map_or(0, |(_, events)| events.len() as u64)
}

/// One writer: `rate` changes a second to random records until `stop`;
/// returns how many the server said it committed.
fn writer(
    ws: Ws,
    table: String,
    shape: &ViewsShape,
    rate: f64,
    stop: Instant,
    seed: u64,
) -> JoinHandle<Result<u64>> {
    let (records, users, reassign) = (shape.records.max(1), shape.users.max(1), shape.reassign);
    tokio::spawn(async move {
        let (mut tx, mut rx) = ws.split();
        let committed = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let acks = {
            let (committed, answered) = (committed.clone(), answered.clone());
            tokio::spawn(async move {
                while let Some(Ok(Message::Binary(b))) = rx.next().await {
                    if answer_rid(&b).is_some() {
                        answered.fetch_add(1, Ordering::Relaxed);
                        if ack_committed(&b) {
                            committed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut rid = 1u64;
        while Instant::now() < stop {
            tick.tick().await;
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let record = (x >> 33) as usize % records;
            let mut changes = vec![json!({"fieldId": "n", "newValue": {"sentUs": now_us()}})];
            if reassign > 0 && rid.is_multiple_of(reassign) {
                let to = (x >> 13) as usize % users;
                changes.push(json!({"fieldId": "owner", "newValue": format!("u{to}")}));
            }
            let frame = json!(["record_change", {"type": "update", "recordId": format!("r{record:06}"),
                "tableId": table, "changes": changes}, rid]);
            tx.send(encode(&frame)?).await?;
            rid += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while answered.load(Ordering::Relaxed) + 1 < rid && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = tx.close().await;
        acks.abort();
        Ok(committed.load(Ordering::Relaxed))
    })
}

/// CPU seconds of every `--pid` together, now.
fn cpu_now(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| proc_stats(*p))
        .map(|s| s.cpu_secs)
        .sum()
}

/// Connects every subscriber, round-robin over the sidecars: the users
/// through the view (or whole, `every_subscriber`), then the unfiltered ones.
async fn subscribers(args: &Args, shape: &ViewsShape, table: &str) -> Result<Vec<(bool, Ws)>> {
    let mut conns = Vec::with_capacity(shape.users + shape.unfiltered);
    let view = if shape.every_subscriber {
        None
    } else {
        Some(VIEW)
    };
    for u in 0..shape.users {
        let url = &args.url[u % args.url.len()];
        conns.push((true, join(url, args, &format!("u{u}"), table, view).await?));
    }
    for s in 0..shape.unfiltered {
        let url = &args.url[s % args.url.len()];
        conns.push((
            false,
            join(url, args, &format!("all{s}"), table, None).await?,
        ));
    }
    Ok(conns)
}

pub async fn views(args: &Args, shape: &ViewsShape) -> Result<Value> {
    let table = format!("bench-views-{:x}", now_us());
    let setup = Instant::now();
    seed(args, shape, &table).await?;
    let seeded = setup.elapsed().as_secs_f64();
    let conns = subscribers(args, shape, &table).await?;
    let connected = setup.elapsed().as_secs_f64() - seeded;
    // Let presence notices of the joins settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_now(&args.pid);
    let stop = Instant::now() + Duration::from_secs(args.duration);
    let until = stop + Duration::from_secs(2);
    let counters: Vec<(bool, JoinHandle<Seen>)> = conns
        .into_iter()
        .map(|(user, ws)| (user, count(ws, until)))
        .collect();
    let mut ws_writers = Vec::new();
    let per = shape.rate as f64 / shape.writers.max(1) as f64;
    for w in 0..shape.writers.max(1) {
        let url = &args.url[w % args.url.len()];
        let ws = crate::client::connect_as(
            url,
            args.secret.as_deref(),
            &format!("gen{w}"),
            &all_tables(),
        )
        .await?;
        ws_writers.push(writer(ws, table.clone(), shape, per, stop, w as u64 + 1));
    }
    let mut committed = 0;
    for w in ws_writers {
        committed += w.await??;
    }
    report(
        args,
        shape,
        counters,
        committed,
        cpu_before,
        (seeded, connected),
    )
    .await
}

async fn report(
    args: &Args,
    shape: &ViewsShape,
    counters: Vec<(bool, JoinHandle<Seen>)>,
    committed: u64,
    cpu_before: f64,
    (seeded, connected): (f64, f64),
) -> Result<Value> {
    let (mut user_seen, mut all_seen) = (Seen::default(), Seen::default());
    let mut lat = Vec::new();
    let mut closed_early = 0u64;
    for (user, h) in counters {
        let s = h.await?;
        closed_early += u64::from(s.closed_early);
        let into = if user { &mut user_seen } else { &mut all_seen };
        into.changes += s.changes;
        into.entered += s.entered;
        into.left += s.left;
        lat.extend(s.latencies_us);
    }
    let cpu = cpu_now(&args.pid) - cpu_before;
    let per_change = |n: u64| (n as f64 / committed.max(1) as f64 * 100.0).round() / 100.0;
    let to_users = user_seen.changes + user_seen.entered + user_seen.left;
    let to_all = all_seen.changes + all_seen.entered + all_seen.left;
    Ok(
        json!({"scenario": "views", "mode": if shape.every_subscriber { "every-subscriber" } else { "view" },
        "users": shape.users, "unfiltered": shape.unfiltered, "records": shape.records,
        "ratePerSec": shape.rate, "reassignEvery": shape.reassign, "sidecars": args.url.len(),
        "seedSeconds": (seeded * 10.0).round() / 10.0, "connectSeconds": (connected * 10.0).round() / 10.0,
        "changesCommitted": committed,
        "deliveriesPerChange": per_change(to_users + to_all),
        "toUsersPerChange": per_change(to_users), "toUnfilteredPerChange": per_change(to_all),
        "userChanges": user_seen.changes, "entered": user_seen.entered, "left": user_seen.left,
        "latencyMs": latency(lat), "closedEarly": closed_early,
        "cpuSecondsDuringLoad": (cpu * 100.0).round() / 100.0,
        "cpuUsPerChange": if args.pid.is_empty() { Value::Null } else { json!((cpu * 1e6 / committed.max(1) as f64).round()) },
        "perSubscriberChecksPerChange": shape.users + shape.unfiltered}),
    )
}
