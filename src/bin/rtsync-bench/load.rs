//! Building blocks of the scenarios: subscribers that record what they
//! receive, and writers that send stamped changes at a fixed rate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinHandle;

use crate::client::{now_us, StreamKey, Ws};
use crate::proto::{Frame, Proto};

/// What one subscriber saw.
pub struct Received {
    pub table: usize,
    pub ids: Vec<StreamKey>,
    pub latencies_us: Vec<u64>,
}

/// Changes committed per table (as the writers' answers say), and whether
/// the writers are done: only then may a subscriber that has everything
/// stop (a change still unanswered may still come).
pub struct Counts {
    tables: Vec<AtomicU64>,
    done: AtomicBool,
}

pub type Written = Arc<Counts>;

pub fn written(tables: usize) -> Written {
    Arc::new(Counts {
        tables: (0..tables).map(|_| AtomicU64::new(0)).collect(),
        done: AtomicBool::new(false),
    })
}

impl Counts {
    fn add(&self, table: usize) {
        self.tables[table].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, table: usize) -> u64 {
        self.tables[table].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.tables.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Every writer has ended.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }

    fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// How long after the last subscription the load starts: a fresh
/// subscription's first live events are held up to 100 ms for a recovery
/// that may follow it (docs/protocol.md 3.1, "subscribe then recover"),
/// which is a reconnect's cost, not the steady state being measured.
pub const SUBSCRIPTION_SETTLE: Duration = Duration::from_millis(150);

/// Reads change events until `stop`, then until everything written to its
/// table arrived or `drain` more time passed.
pub fn subscriber(
    proto: Proto,
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
                || (now > stop && written.finished() && r.ids.len() as u64 >= written.get(table))
            {
                break;
            }
            let msg = match tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
                Ok(Some(Ok(m))) => m,
                Err(_) => continue,
                Ok(_) => break,
            };
            let received = now_us();
            match proto.parse(&msg) {
                Frame::Events(events) => {
                    for e in events {
                        if let Some(sent) = e.sent_us() {
                            r.latencies_us.push(received.saturating_sub(sent));
                        }
                        r.ids.push(e.id);
                    }
                }
                Frame::Reply(m) => {
                    let _ = ws.send(m).await;
                }
                _ => {}
            }
        }
        let _ = ws.close(None).await;
        r
    })
}

/// Sends `rate` stamped changes per second, round-robin over `tables`
/// (indexes into the names), until `stop`. A change counts as written when
/// its answer says it was committed (so a change the server never took is
/// not counted as lost); the writer waits for the last answers (up to 10 s)
/// before it closes.
pub fn writer(
    proto: Proto,
    ws: Ws,
    tables: Vec<(usize, String)>,
    rate: f64,
    written: Written,
    stop: Instant,
    wide: bool,
) -> JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let (tx, mut rx) = ws.split();
        let tx = Arc::new(tokio::sync::Mutex::new(tx));
        let sent = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let acks = {
            let (tx, tables, written, answered) = (
                tx.clone(),
                tables.clone(),
                written.clone(),
                answered.clone(),
            );
            tokio::spawn(async move {
                while let Some(Ok(msg)) = rx.next().await {
                    match proto.parse(&msg) {
                        Frame::Answer { rid, committed } => {
                            // Request ids run 1, 2, ... in the round-robin order.
                            let index = (rid.max(1) - 1) as usize % tables.len();
                            if committed {
                                written.add(tables[index].0);
                            }
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Frame::Reply(m) => {
                            let _ = tx.lock().await.send(m).await;
                        }
                        _ => {}
                    }
                }
            })
        };
        let mut rid = 1u64;
        while Instant::now() < stop {
            tick.tick().await;
            let (_, name) = &tables[(rid - 1) as usize % tables.len()];
            tx.lock()
                .await
                .send(proto.stamped_change(name, "r", rid, wide)?)
                .await?;
            sent.fetch_add(1, Ordering::Relaxed);
            rid += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while answered.load(Ordering::Relaxed) < sent.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = tx.lock().await.close().await;
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

/// Waits for the subscribers; call it once the writers have ended.
pub async fn tally(subs: Vec<JoinHandle<Received>>, written: &Written) -> Result<Tally> {
    written.finish();
    let mut t = Tally {
        delivered: 0,
        lost: 0,
        duplicates: 0,
        latencies_us: Vec::new(),
    };
    for h in subs {
        let r = h.await?;
        let expected = written.get(r.table);
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
