//! One table's delivery, run by the sink that holds the table's lease.
//!
//! It first claims (`XAUTOCLAIM`) what other consumers of the `rtsync-sink`
//! group read but never acknowledged (a dead sink's batch in flight), then
//! loops: read its own pending entries (`XREADGROUP ... 0`), or new ones
//! (`>`) when none are pending, POST them as one batch, and `XACK` them once
//! the app answered 2xx, or after moving them to the dead-letter stream.
//! Pending entries always go first and in id order, so a table's events are
//! delivered in stream order, at least once. A batch that must be retried
//! is sent again (capped exponential backoff) until it succeeds or the sink
//! stops; stopping never interrupts a POST in flight.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::deliver::{Outcome, Poster};
use crate::protocol::event::ChangeEvent;
use crate::protocol::StreamId;
use crate::store::tailer::{bytes, text};
use crate::store::{Store, StoreError};

/// The consumer group every sink process shares.
pub const GROUP: &str = "rtsync-sink";
/// How long an idle table waits before it looks for new entries again.
const IDLE_POLL: Duration = Duration::from_millis(200);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What every table worker of a sink process shares.
pub struct Shared {
    pub store: Arc<Store>,
    pub poster: Poster,
    pub batch: usize,
    /// This process's consumer name in the group (its instance id).
    pub consumer: String,
}

/// One stream entry as read: its fields are gone when it was trimmed while pending.
struct Read {
    id: String,
    fields: Option<Vec<(String, Vec<u8>)>>,
}

/// Delivers `table` until `stop`; `lag_ms` reports the age of the oldest
/// entry it has read but not acknowledged (0 when caught up).
pub async fn run(
    shared: Arc<Shared>,
    table: String,
    stop: CancellationToken,
    lag_ms: Arc<std::sync::atomic::AtomicU64>,
) {
    let stream = shared.store.keys.events(&table);
    let mut claimed = false;
    let mut backoff = RETRY_FIRST;
    while !stop.is_cancelled() {
        let step = async {
            if !claimed {
                claim_all(&shared, &stream).await?;
                claimed = true;
            }
            step(&shared, &table, &stream, &stop, &lag_ms).await
        };
        let wait = match step.await {
            Ok(true) => {
                backoff = RETRY_FIRST;
                continue;
            }
            Ok(false) => IDLE_POLL,
            Err(e) => {
                tracing::warn!(table, error = %e, "sink cannot read the table's stream; retrying");
                backoff = (backoff * 2).min(RETRY_MAX);
                backoff
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Takes over every entry other consumers read but did not acknowledge.
async fn claim_all(shared: &Shared, stream: &str) -> Result<(), StoreError> {
    let mut start = "0-0".to_owned();
    loop {
        let mut conn = shared.store.conn();
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(&shared.consumer)
            .arg(0)
            .arg(&start)
            .arg("COUNT")
            .arg(shared.batch.max(100))
            .arg("JUSTID")
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from_redis)?;
        let next = match &reply {
            Value::Array(parts) => parts.first().cloned().and_then(text),
            _ => None,
        };
        match next {
            Some(n) if n != "0-0" => start = n,
            _ => return Ok(()),
        }
    }
}

/// One batch: read, deliver, acknowledge. False when there was nothing to do.
async fn step(
    shared: &Shared,
    table: &str,
    stream: &str,
    stop: &CancellationToken,
    lag_ms: &std::sync::atomic::AtomicU64,
) -> Result<bool, StoreError> {
    let mut entries = read(shared, stream, "0").await?;
    if entries.is_empty() {
        entries = read(shared, stream, ">").await?;
    }
    let Some(first) = entries.first() else {
        lag_ms.store(0, std::sync::atomic::Ordering::Relaxed);
        return Ok(false);
    };
    if let Some(id) = StreamId::parse(&first.id) {
        let age = now_ms().saturating_sub(id.ms);
        lag_ms.store(age, std::sync::atomic::Ordering::Relaxed);
    }
    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    let batch = decode_batch(shared, table, entries).await?;
    if !batch.events.is_empty() && !deliver(shared, table, stop, batch).await? {
        // Stopping: the batch stays pending for whoever owns the table next.
        return Ok(true);
    }
    let mut conn = shared.store.conn();
    let _: usize = redis::cmd("XACK")
        .arg(stream)
        .arg(GROUP)
        .arg(&ids)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(true)
}

/// A batch's change events and the entries they came from.
struct Batch {
    events: Vec<ChangeEvent>,
    entries: Vec<Read>,
}

/// Decodes the entries read: entries trimmed while pending are counted
/// lost, and entries that are not change events are dead-lettered alone
/// (status 0); the rest make the batch.
async fn decode_batch(
    shared: &Shared,
    table: &str,
    entries: Vec<Read>,
) -> Result<Batch, StoreError> {
    let lost = entries.iter().filter(|e| e.fields.is_none()).count();
    if lost > 0 {
        // Trimmed while pending (older than RTS_SINK_MAX_LAG_SECS): gone.
        crate::metrics::sink_lost(lost);
        tracing::error!(
            table,
            lost,
            "entries were trimmed before the sink delivered them: lost to the sink"
        );
    }
    let mut batch = Batch {
        events: Vec::with_capacity(entries.len()),
        entries: Vec::with_capacity(entries.len()),
    };
    for e in entries {
        let Some(fields) = &e.fields else { continue };
        match ChangeEvent::from_stream_entry(&e.id, fields, table) {
            Ok(ev) => {
                batch.events.push(ev);
                batch.entries.push(e);
            }
            Err(err) => {
                let why = err.to_string();
                tracing::warn!(table, id = e.id, error = %why, "an entry is not a change event: dead-lettered");
                dead_letter(shared, table, std::slice::from_ref(&e), 0, &why).await?;
            }
        }
    }
    Ok(batch)
}

/// POSTs the batch until the app takes it (2xx) or refuses it for good
/// (dead-lettered), retrying with backoff in between. False when `stop`
/// came first (nothing is acknowledged then).
async fn deliver(
    shared: &Shared,
    table: &str,
    stop: &CancellationToken,
    batch: Batch,
) -> Result<bool, StoreError> {
    // A base's stream goes out as {"baseId", "events"} (docs/protocol.md 3.2).
    let body = match crate::protocol::ids::base_of_stream(table) {
        Some(base) => json!({"baseId": base, "events": batch.events}),
        None => json!({"tableId": table, "events": batch.events}),
    };
    let body = serde_json::to_vec(&body)
        .map_err(|e| StoreError::Reply(format!("cannot encode a batch: {e}")))?;
    let events = batch.events.len();
    let mut backoff = RETRY_FIRST;
    loop {
        match shared.poster.post(body.clone(), events).await {
            Outcome::Delivered => return Ok(true),
            Outcome::Dead { status, reason } => {
                tracing::warn!(
                    table,
                    status,
                    reason,
                    events,
                    "the app refused a batch: dead-lettered"
                );
                dead_letter(shared, table, &batch.entries, status, &reason).await?;
                return Ok(true);
            }
            Outcome::Retry(why) => {
                tracing::warn!(
                    table,
                    reason = why,
                    retry_in_ms = backoff.as_millis() as u64,
                    "delivery failed; retrying"
                );
                tokio::select! {
                    _ = stop.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

async fn read(shared: &Shared, stream: &str, from: &str) -> Result<Vec<Read>, StoreError> {
    let mut conn = shared.store.conn();
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(&shared.consumer)
        .arg("COUNT")
        .arg(shared.batch)
        .arg("STREAMS")
        .arg(stream)
        .arg(from)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(parse_read(reply))
}

/// `[[stream, [[id, [field, value, ...] | nil], ...]]]`, or nil.
fn parse_read(reply: Value) -> Vec<Read> {
    let streams = match reply {
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for s in streams {
        let Value::Array(mut kv) = s else { continue };
        let Some(Value::Array(entries)) = kv.pop() else {
            continue;
        };
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                continue;
            };
            if parts.len() != 2 {
                continue;
            }
            let fields = parts.pop();
            let Some(id) = parts.pop().and_then(text) else {
                continue;
            };
            let fields = match fields {
                Some(Value::Array(flat)) => {
                    let mut f = Vec::with_capacity(flat.len() / 2);
                    let mut it = flat.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        if let (Some(k), Some(v)) = (text(k), bytes(v)) {
                            f.push((k, v));
                        }
                    }
                    Some(f)
                }
                _ => None,
            };
            out.push(Read { id, fields });
        }
    }
    out
}

/// Moves entries to `<p>:{T}:dead` with `originalId`, `status` and `reason`.
async fn dead_letter(
    shared: &Shared,
    table: &str,
    entries: &[Read],
    status: u16,
    reason: &str,
) -> Result<(), StoreError> {
    let dead = shared.store.keys.dead(table);
    let cut = now_ms().saturating_sub(shared.store.retention_ms);
    let mut pipe = redis::pipe();
    for e in entries {
        let cmd = pipe
            .cmd("XADD")
            .arg(&dead)
            .arg("MINID")
            .arg("~")
            .arg(cut)
            .arg("*");
        for (k, v) in e.fields.iter().flatten() {
            cmd.arg(k).arg(v.as_slice());
        }
        cmd.arg("originalId")
            .arg(&e.id)
            .arg("status")
            .arg(status)
            .arg("reason")
            .arg(reason);
    }
    let mut conn = shared.store.conn();
    let _: Value = pipe
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(())
}

pub use crate::clock::now_ms;
