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

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::deliver::{Outcome, Poster};
use crate::backoff::Backoff;
use crate::change::StreamId;
use crate::protocol::event::ChangeEvent;
use crate::store::sink_group::{self, HeldEntry};
use crate::store::{Store, StoreError};
/// How long an idle table waits before it looks for new entries again.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Delays between POSTs of a batch the app did not take: 100 ms doubling
/// to 30 s (the app may be down for a while; the batch waits for it).
const DELIVERY_RETRY: Backoff = Backoff::new(Duration::from_millis(100), RETRY_MAX);
/// Delays after failed stream reads: 200 ms doubling to 30 s, back to the
/// start once a batch went through.
const READ_RETRY: Backoff = Backoff::new(Duration::from_millis(200), RETRY_MAX);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What every table worker of a sink process shares.
pub struct Shared {
    pub store: Arc<Store>,
    pub poster: Poster,
    pub batch: usize,
    /// This process's consumer name in the group (its instance id).
    pub consumer: String,
}

/// Delivers `table` until `stop`; `lag_ms` reports the age of the oldest
/// entry it has read but not acknowledged (0 when caught up).
pub async fn run(
    shared: Arc<Shared>,
    table: String,
    stop: CancellationToken,
    lag_ms: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut claimed = false;
    let mut backoff = READ_RETRY;
    while !stop.is_cancelled() {
        let step = async {
            if !claimed {
                let page = shared.batch.max(100);
                sink_group::claim_all(&shared.store, &table, &shared.consumer, page).await?;
                claimed = true;
            }
            step(&shared, &table, &stop, &lag_ms).await
        };
        let wait = match step.await {
            Ok(true) => {
                backoff.reset();
                continue;
            }
            Ok(false) => IDLE_POLL,
            Err(e) => {
                tracing::warn!(table, error = %e, "sink cannot read the table's stream; retrying");
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One batch: read, deliver, acknowledge. False when there was nothing to do.
async fn step(
    shared: &Shared,
    table: &str,
    stop: &CancellationToken,
    lag_ms: &std::sync::atomic::AtomicU64,
) -> Result<bool, StoreError> {
    let (store, me, n) = (&*shared.store, &shared.consumer, shared.batch);
    let mut entries = sink_group::read(store, table, me, n, true).await?;
    if entries.is_empty() {
        entries = sink_group::read(store, table, me, n, false).await?;
    }
    let Some(first) = entries.first() else {
        lag_ms.store(0, std::sync::atomic::Ordering::Relaxed);
        return Ok(false);
    };
    let age = now_ms().saturating_sub(first.id.ms);
    lag_ms.store(age, std::sync::atomic::Ordering::Relaxed);
    let ids: Vec<StreamId> = entries.iter().map(|e| e.id).collect();
    let batch = decode_batch(shared, table, entries).await?;
    if !batch.events.is_empty() && !deliver(shared, table, stop, batch).await? {
        // Stopping: the batch stays pending for whoever owns the table next.
        return Ok(true);
    }
    sink_group::ack(store, table, &ids).await?;
    Ok(true)
}

/// A batch's change events and the entries they came from.
struct Batch {
    events: Vec<ChangeEvent>,
    entries: Vec<HeldEntry>,
}

/// Decodes the entries read: entries trimmed while pending are counted
/// lost, and entries that are not change events are dead-lettered alone
/// (status 0); the rest make the batch.
async fn decode_batch(
    shared: &Shared,
    table: &str,
    entries: Vec<HeldEntry>,
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
        match ChangeEvent::from_stream_entry(e.id, fields, table) {
            Ok(ev) => {
                batch.events.push(ev);
                batch.entries.push(e);
            }
            Err(err) => {
                let why = err.to_string();
                tracing::warn!(table, id = %e.id, error = %why, "an entry is not a change event: dead-lettered");
                sink_group::dead_letter(&shared.store, table, std::slice::from_ref(&e), 0, &why)
                    .await?;
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
    let body = match crate::change::ids::base_of_stream(table) {
        Some(base) => json!({"baseId": base, "events": batch.events}),
        None => json!({"tableId": table, "events": batch.events}),
    };
    let body = serde_json::to_vec(&body)
        .map_err(|e| StoreError::Reply(format!("cannot encode a batch: {e}")))?;
    let events = batch.events.len();
    let mut backoff = DELIVERY_RETRY;
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
                sink_group::dead_letter(&shared.store, table, &batch.entries, status, &reason)
                    .await?;
                return Ok(true);
            }
            Outcome::Retry(why) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    table,
                    reason = why,
                    retry_in_ms = delay.as_millis() as u64,
                    "delivery failed; retrying"
                );
                tokio::select! {
                    _ = stop.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

use crate::clock::now_ms;
