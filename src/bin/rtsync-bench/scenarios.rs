//! The scenarios. Each returns a JSON report; `main` prints it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{connect, encode, event_name, now_us, subscriber, wait_ack, Ws};
use crate::load::{self, tally, Tally};
use crate::proto::Proto;
use crate::report::latency;
use crate::Args;

fn run_id() -> String {
    format!("{:x}", now_us())
}

/// Round-robin over the sidecar URLs.
struct Urls<'a> {
    urls: &'a [String],
    next: usize,
}

impl<'a> Urls<'a> {
    fn new(urls: &'a [String]) -> Self {
        Urls { urls, next: 0 }
    }
    fn next(&mut self) -> &'a str {
        self.next += 1;
        &self.urls[self.next % self.urls.len()]
    }
}

pub async fn commit(
    args: &Args,
    writers: usize,
    records: usize,
    readers: usize,
    reader_kb: usize,
) -> Result<Value> {
    let committed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let reads = if readers > 0 {
        big_readers(args, readers, reader_kb).await?
    } else {
        Vec::new()
    };
    let stop = Instant::now() + Duration::from_secs(args.duration);
    let mut handles = Vec::new();
    for w in 0..writers {
        let mut ws = connect(&args.url[0], args.secret.as_deref(), &format!("bench-w{w}")).await?;
        let (committed, failed) = (committed.clone(), failed.clone());
        handles.push(tokio::spawn(async move {
            let mut rid = 1u64;
            let mut lat = Vec::new();
            while Instant::now() < stop {
                let frame = json!(["record_change", {
                    "type": "update", "recordId": format!("r{}", rid as usize % records.max(1)),
                    "tableId": format!("bench-commit-{}", w % 4), "baseId": "bench",
                    "changes": [{"fieldId": "f1", "newValue": rid}]}, rid]);
                let sent = Instant::now();
                ws.send(encode(&frame)?).await?;
                // An error answer (`timeout` under a heavy read) is counted;
                // its latency is kept too.
                match wait_ack(&mut ws, rid).await {
                    Ok(_) => committed.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                lat.push(sent.elapsed().as_micros() as u64);
                rid += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let started = Instant::now();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    let n = committed.load(Ordering::Relaxed);
    let mut read_lat = Vec::new();
    for r in reads {
        read_lat.extend(r.await??);
    }
    Ok(
        json!({"scenario": "commit", "writers": writers, "commits": n,
        "commitsPerSec": (n as f64 / secs).round(), "ackLatencyMs": latency(lat),
        "failed": failed.load(Ordering::Relaxed),
        "readers": readers, "readerKb": reader_kb, "reads": read_lat.len(),
        "readLatencyMs": latency(read_lat)}),
    )
}

/// `readers` connections that ask for 250 copies of one record of
/// `kb` KB with `load_records`, again and again, for the run's duration.
async fn big_readers(
    args: &Args,
    readers: usize,
    kb: usize,
) -> Result<Vec<tokio::task::JoinHandle<Result<Vec<u64>>>>> {
    let table = format!("bench-read-{}", run_id());
    let mut ws = connect(&args.url[0], args.secret.as_deref(), "bench-big").await?;
    let frame = json!(["record_change", {"type": "update", "recordId": "big", "tableId": table,
        "changes": [{"fieldId": "f", "newValue": "x".repeat(kb * 1024)}]}, 1]);
    ws.send(encode(&frame)?).await?;
    wait_ack(&mut ws, 1).await?;
    let stop = Instant::now() + Duration::from_secs(args.duration);
    let mut handles = Vec::new();
    for r in 0..readers {
        let mut ws = connect(&args.url[0], args.secret.as_deref(), &format!("bench-r{r}")).await?;
        let table = table.clone();
        handles.push(tokio::spawn(async move {
            let ids = vec!["big"; 250];
            let mut lat = Vec::new();
            let mut rid = 0u64;
            while Instant::now() < stop {
                rid += 1;
                let sent = Instant::now();
                let frame = json!(["load_records", {"tableId": table, "recordIds": ids}, rid]);
                ws.send(encode(&frame)?).await?;
                // A read answered `timeout` still took its time.
                let _ = wait_ack(&mut ws, rid).await;
                lat.push(sent.elapsed().as_micros() as u64);
            }
            anyhow::Ok(lat)
        }));
    }
    Ok(handles)
}

pub async fn fanout(args: &Args, proto: Proto, shape: &Shape, rate: u64) -> Result<Value> {
    let read_before = crate::wire::bytes_read();
    let inflated_before = crate::wire::bytes_inflated();
    let r = fanout_run(args, proto, shape, rate, args.duration).await?;
    let read = crate::wire::bytes_read() - read_before;
    let inflated = crate::wire::bytes_inflated() - inflated_before;
    let secs = args.duration as f64;
    let per_delivery = |bytes: u64| (bytes as f64 / r.tally.delivered.max(1) as f64).round();
    Ok(
        json!({"scenario": "fanout", "proto": format!("{proto:?}").to_lowercase(),
        "tables": shape.tables, "subscribersPerTable": shape.subscribers,
        "writersPerTable": shape.writers, "ratePerWriter": rate, "sidecars": args.url.len(),
        "permissionClasses": shape.classes,
        "changesSent": r.committed, "changesPerSec": (r.committed as f64 / secs).round(),
        "deliveries": r.tally.delivered, "deliveriesPerSec": (r.tally.delivered as f64 / secs).round(),
        "lost": r.tally.lost, "duplicates": r.tally.duplicates, "latencyMs": latency(r.tally.latencies_us),
        // Every byte the bench's sockets read in the run (events, acks,
        // handshakes), per delivery; and what compressed frames inflated to.
        "wireBytesRead": read, "wireBytesPerDelivery": per_delivery(read),
        "inflatedBytes": inflated}),
    )
}

/// The fan-out load: `tables` tables, each with `subscribers` subscribers
/// and `writers` writers, spread round-robin over the servers.
pub struct Shape {
    pub tables: usize,
    pub subscribers: usize,
    pub writers: usize,
    /// `Some(n)`: writers also write the hidden fields, and subscriber `s`
    /// of each table is in permission class `s % n` (`client::class_grant`).
    pub classes: Option<usize>,
}

/// What one fan-out run saw.
pub struct FanoutRun {
    /// Changes the server said it committed.
    pub committed: u64,
    pub tally: Tally,
}

/// One fan-out run of `secs` seconds at `rate` changes/s per writer, on
/// tables of its own (a fresh run id).
pub async fn fanout_run(
    args: &Args,
    proto: Proto,
    shape: &Shape,
    rate: u64,
    secs: u64,
) -> Result<FanoutRun> {
    let run = run_id();
    let name = |t: usize| format!("bench-{run}-{t}");
    let mut urls = Urls::new(&args.url);
    let mut conns = Vec::new();
    for t in 0..shape.tables {
        for s in 0..shape.subscribers {
            let user = format!("s{t}-{s}");
            let grant = crate::client::class_grant(shape.classes.map_or(0, |n| s % n.max(1)));
            let ws = proto
                .subscriber(urls.next(), args.secret.as_deref(), &user, &name(t), &grant)
                .await?;
            conns.push((t, ws));
        }
    }
    let written = load::written(shape.tables);
    tokio::time::sleep(load::SUBSCRIPTION_SETTLE).await;
    let stop = Instant::now() + Duration::from_secs(secs);
    let subs: Vec<_> = conns
        .into_iter()
        .map(|(t, ws)| {
            load::subscriber(proto, ws, t, written.clone(), stop, Duration::from_secs(10))
        })
        .collect();
    let mut ws_writers = Vec::new();
    for t in 0..shape.tables {
        for w in 0..shape.writers {
            let user = format!("w{t}-{w}");
            let ws = proto
                .connect(
                    urls.next(),
                    args.secret.as_deref(),
                    &user,
                    &crate::client::all_tables(),
                )
                .await?;
            ws_writers.push(load::writer(
                proto,
                ws,
                vec![(t, name(t))],
                rate as f64,
                written.clone(),
                stop,
                shape.classes.is_some(),
            ));
        }
    }
    for w in ws_writers {
        w.await??;
    }
    let tally = tally(subs, &written).await?;
    let committed = written.total();
    Ok(FanoutRun { committed, tally })
}

pub async fn tables(args: &Args, tables: usize, writers: usize) -> Result<Value> {
    let run = run_id();
    let name = |t: usize| format!("bench-{run}-{t}");
    let mut conns = Vec::new();
    for t in 0..tables {
        conns.push((
            t,
            subscriber(
                &args.url[0],
                args.secret.as_deref(),
                &format!("s{t}"),
                &name(t),
            )
            .await?,
        ));
    }
    let written = load::written(tables);
    let stop = Instant::now() + Duration::from_secs(args.duration);
    let subs: Vec<_> = conns
        .into_iter()
        .map(|(t, ws)| {
            load::subscriber(
                Proto::Rtsync,
                ws,
                t,
                written.clone(),
                stop,
                Duration::from_secs(10),
            )
        })
        .collect();
    // One change per second per table, spread over the writers.
    let mut ws_writers = Vec::new();
    let per_writer = tables.div_ceil(writers.max(1));
    let mut urls = Urls::new(&args.url);
    for (w, chunk) in (0..tables)
        .collect::<Vec<_>>()
        .chunks(per_writer)
        .enumerate()
    {
        let ws = connect(urls.next(), args.secret.as_deref(), &format!("w{w}")).await?;
        let names: Vec<(usize, String)> = chunk.iter().map(|t| (*t, name(*t))).collect();
        let rate = names.len() as f64;
        ws_writers.push(load::writer(
            Proto::Rtsync,
            ws,
            names,
            rate,
            written.clone(),
            stop,
            false,
        ));
    }
    for w in ws_writers {
        w.await??;
    }
    let t = tally(subs, &written).await?;
    let sent = written.total();
    Ok(
        json!({"scenario": "tables", "tables": tables, "writers": writers,
        "changesSent": sent, "deliveries": t.delivered, "lost": t.lost,
        "duplicates": t.duplicates, "latencyMs": latency(t.latencies_us)}),
    )
}

/// N idle subscribed connections (`proto`), or long-polling sessions
/// (`None`, see [`crate::polling`]); the sidecar's RSS growth per connection.
pub async fn idle(
    args: &Args,
    proto: Option<crate::proto::Proto>,
    connections: usize,
    tables: usize,
    pid: Option<u32>,
) -> Result<Value> {
    let run = run_id();
    let before = pid.and_then(crate::report::proc_stats);
    let mut held = Vec::with_capacity(connections);
    let mut polls = Vec::new();
    let host = crate::polling::host_of(&args.url[0]);
    let started = Instant::now();
    for i in 0..connections {
        let table = format!("bench-idle-{run}-{}", i % tables.max(1));
        let user = format!("idle{i}");
        let Some(proto) = proto else {
            let host = host.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
            polls.push(crate::polling::subscriber(host, &user, &table).await?);
            continue;
        };
        held.push(
            proto
                .subscriber(
                    &args.url[0],
                    args.secret.as_deref(),
                    &user,
                    &table,
                    &crate::client::all_tables(),
                )
                .await?,
        );
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the sidecar settle (presence notices, allocator).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = pid.and_then(crate::report::proc_stats);
    let report = match (before, after) {
        (Some(b), Some(a)) => {
            let added_kb = a.rss_kb.saturating_sub(b.rss_kb);
            json!({"rssBeforeMiB": b.rss_kb / 1024, "rssAfterMiB": a.rss_kb / 1024,
                "addedMiB": added_kb / 1024, "kbPerConnection": (added_kb as f64 / connections as f64 * 10.0).round() / 10.0})
        }
        _ => json!({"note": "pass --pid to measure the sidecar's memory"}),
    };
    for mut ws in held {
        let _ = ws.close(None).await;
    }
    for poll in polls {
        poll.abort();
    }
    Ok(
        json!({"scenario": "idle", "connections": connections, "tables": tables,
        "polling": proto.is_none(),
        "connectSeconds": (connect_secs * 10.0).round() / 10.0, "memory": report}),
    )
}

#[derive(Deserialize)]
struct CursorData {
    cursor: CursorAt,
}

#[derive(Deserialize)]
struct CursorAt {
    #[serde(rename = "recordId")]
    record_id: String,
}

/// Cursor storms: one mover per table sends `rate` moves per second; the
/// others count relays (at most 20 per second per mover) and their delay.
pub async fn presence(args: &Args, tables: usize, subscribers: usize, rate: u64) -> Result<Value> {
    let run = run_id();
    let name = |t: usize| format!("bench-p-{run}-{t}");
    let mut urls = Urls::new(&args.url);
    let stop = Instant::now() + Duration::from_secs(args.duration) + Duration::from_secs(2);
    let mut watchers = Vec::new();
    for t in 0..tables {
        for s in 0..subscribers {
            let user = format!("p{t}-{s}");
            let ws = subscriber(urls.next(), args.secret.as_deref(), &user, &name(t)).await?;
            watchers.push(tokio::spawn(relay_latencies(ws, stop)));
        }
    }
    let mut movers = Vec::new();
    let sent = Arc::new(AtomicU64::new(0));
    let move_stop = Instant::now() + Duration::from_secs(args.duration);
    for t in 0..tables {
        let user = format!("mover{t}");
        let ws = subscriber(urls.next(), args.secret.as_deref(), &user, &name(t)).await?;
        let mover = move_cursor(ws, name(t), rate, move_stop, sent.clone());
        movers.push(tokio::spawn(mover));
    }
    for m in movers {
        m.await??;
    }
    let mut lat = Vec::new();
    for w in watchers {
        lat.extend(w.await?);
    }
    let relayed = lat.len() as u64;
    let secs = args.duration as f64;
    Ok(
        json!({"scenario": "presence", "tables": tables, "subscribersPerTable": subscribers,
        "movesPerSecPerMover": rate, "movesSent": sent.load(Ordering::Relaxed),
        "relaysReceived": relayed, "relaysPerSecPerWatcher": (relayed as f64 / secs / (tables * subscribers).max(1) as f64 * 10.0).round() / 10.0,
        "relayLatencyMs": latency(lat)}),
    )
}

/// A watcher of the presence scenario: until `stop`, the delay of every
/// cursor relay it receives (the mover put its send time in the record id),
/// in microseconds.
async fn relay_latencies(mut ws: Ws, stop: Instant) -> Vec<u64> {
    let mut lat = Vec::new();
    while Instant::now() < stop {
        let Ok(Some(Ok(Message::Binary(b)))) =
            tokio::time::timeout(Duration::from_millis(100), ws.next()).await
        else {
            continue;
        };
        if event_name(&b) != Some("cursor_position") {
            continue;
        }
        if let Ok((_, d)) = rmp_serde::from_slice::<(String, CursorData)>(&b) {
            if let Some(sent) = d
                .cursor
                .record_id
                .strip_prefix('r')
                .and_then(|s| s.parse::<u64>().ok())
            {
                lat.push(now_us().saturating_sub(sent));
            }
        }
    }
    lat
}

/// A mover of the presence scenario: `rate` cursor moves per second on
/// `table` until `stop`, each counted in `sent` and stamped with its send
/// time.
async fn move_cursor(
    mut ws: Ws,
    table: String,
    rate: u64,
    stop: Instant,
    sent: Arc<AtomicU64>,
) -> Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    while Instant::now() < stop {
        tick.tick().await;
        let frame = json!(["cursor_position", {"tableId": table, "cursor": {"recordId": format!("r{}", now_us()), "fieldId": "f"}}]);
        ws.send(encode(&frame)?).await?;
        sent.fetch_add(1, Ordering::Relaxed);
        // Drain whatever the server sends this mover.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, ws.next()).await {}
    }
    Ok(())
}

/// `load_records` pages on a table of `records` records with `fields`
/// fields each (written first through `record_change`, 16 writers), then
/// every page of `page` records read again and again for the duration:
/// the time of one page, as the client sees it.
pub async fn records(args: &Args, records: usize, fields: usize, page: usize) -> Result<Value> {
    let table = format!("bench-records-{}", run_id());
    let mut fill = Vec::new();
    for w in 0..16usize {
        let mut ws = connect(
            &args.url[0],
            args.secret.as_deref(),
            &format!("bench-fill{w}"),
        )
        .await?;
        let table = table.clone();
        fill.push(tokio::spawn(async move {
            for (rid, r) in (1u64..).zip((w..records).step_by(16)) {
                let changes: Vec<Value> = (0..fields)
                    .map(|f| json!({"fieldId": format!("f{f}"), "newValue": format!("value {r}/{f}")}))
                    .collect();
                let frame = json!(["record_change", {"type": "create", "recordId": format!("r{r:06}"),
                    "tableId": table, "baseId": "bench", "changes": changes}, rid]);
                ws.send(encode(&frame)?).await?;
                wait_ack(&mut ws, rid).await?;
            }
            anyhow::Ok(())
        }));
    }
    for h in fill {
        h.await??;
    }
    let mut ws = connect(&args.url[0], args.secret.as_deref(), "bench-reader").await?;
    let stop = Instant::now() + Duration::from_secs(args.duration);
    let mut lat = Vec::new();
    let mut rid = 1u64;
    let mut pages = 0u64;
    let mut seen = 0usize;
    while Instant::now() < stop {
        let mut after: Option<String> = None;
        seen = 0;
        loop {
            let mut req = json!({"tableId": table, "limit": page});
            if let Some(a) = &after {
                req["after"] = json!(a);
            }
            let sent = Instant::now();
            ws.send(encode(&json!(["load_records", req, rid]))?).await?;
            let answer = wait_ack(&mut ws, rid).await?;
            lat.push(sent.elapsed().as_micros() as u64);
            rid += 1;
            pages += 1;
            seen += answer["records"].as_array().map(Vec::len).unwrap_or(0);
            match answer["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => break,
            }
        }
    }
    Ok(
        json!({"scenario": "records", "records": records, "fields": fields, "page": page,
        "recordsPerPass": seen, "pages": pages, "pageLatencyMs": latency(lat)}),
    )
}
