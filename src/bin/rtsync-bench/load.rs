//! Building blocks of the scenarios: subscribers that record what they
//! receive, and writers that send stamped changes at a fixed rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{events, now_us, stamped_change, Ws};

/// What one subscriber saw.
pub struct Received {
    pub table: usize,
    pub ids: Vec<String>,
    pub latencies_us: Vec<u64>,
}

/// Changes written per table (acked or not: every send is a commit).
pub type Written = Arc<Vec<AtomicU64>>;

pub fn written(tables: usize) -> Written {
    Arc::new((0..tables).map(|_| AtomicU64::new(0)).collect())
}

/// Reads change events until `stop`, then until everything written to its
/// table arrived or `drain` more time passed.
pub fn subscriber(
    mut ws: Ws,
    table: usize,
    written: Written,
    stop: Instant,
    drain: Duration,
) -> JoinHandle<Received> {
    tokio::spawn(async move {
        let mut r = Received {
            table,
            ids: Vec::new(),
            latencies_us: Vec::new(),
        };
        let give_up = stop + drain;
        loop {
            let now = Instant::now();
            if now > give_up
                || (now > stop && r.ids.len() as u64 >= written[table].load(Ordering::Relaxed))
            {
                break;
            }
            let msg = match tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => b,
                Ok(Some(Ok(_))) | Err(_) => continue,
                Ok(_) => break,
            };
            let received = now_us();
            for e in events(&msg) {
                if let Some(sent) = e.sent_us() {
                    r.latencies_us.push(received.saturating_sub(sent));
                }
                r.ids.push(e.id);
            }
        }
        let _ = ws.close(None).await;
        r
    })
}

/// Sends `rate` stamped changes per second, round-robin over `tables`
/// (indexes into the names), until `stop`. Acks are drained concurrently.
pub fn writer(
    ws: Ws,
    tables: Vec<(usize, String)>,
    rate: f64,
    written: Written,
    stop: Instant,
) -> JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let (mut tx, mut rx) = ws.split();
        let acks = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
        let mut rid = 1u64;
        let mut next = 0usize;
        while Instant::now() < stop {
            tick.tick().await;
            let (index, name) = &tables[next % tables.len()];
            next += 1;
            tx.send(stamped_change(name, "r", rid)?).await?;
            written[*index].fetch_add(1, Ordering::Relaxed);
            rid += 1;
        }
        // Let the last acks come back before closing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = tx.close().await;
        acks.abort();
        Ok(())
    })
}

/// Loss, duplicates and latency over all subscribers.
pub struct Tally {
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub latencies_us: Vec<u64>,
}

pub async fn tally(subs: Vec<JoinHandle<Received>>, written: &Written) -> Result<Tally> {
    let mut t = Tally {
        delivered: 0,
        lost: 0,
        duplicates: 0,
        latencies_us: Vec::new(),
    };
    for h in subs {
        let r = h.await?;
        let expected = written[r.table].load(Ordering::Relaxed);
        let mut unique = r.ids.clone();
        unique.sort_unstable();
        unique.dedup();
        t.duplicates += (r.ids.len() - unique.len()) as u64;
        t.lost += expected.saturating_sub(unique.len() as u64);
        t.delivered += r.ids.len() as u64;
        t.latencies_us.extend(r.latencies_us);
    }
    Ok(t)
}
