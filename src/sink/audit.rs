//! The audit log's delivery (`RTS_SINK_AUDIT=true`, docs/protocol.md 12):
//! the entries of `<p>:audit`, POSTed to the app as `{"audit": [entry,
//! ...]}` batches through their own `rtsync-sink` group on that stream,
//! with the table batches' rules: one sink at a time (a lease,
//! `{<p>:audit}:sink-lease`, taken and renewed by the coordinator), a
//! dead sink's pending entries claimed first, pending before new, 2xx
//! acknowledges, retryable failures are retried with backoff, other
//! answers move the batch to `{<p>:audit}:dead`.
//!
//! Data flow: `sink::Coordinator` (lease) → [`run`] → `store::sink_group`
//! `*_at` reads → `audit::read::to_json` → `deliver::Poster` → ack.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::deliver::Outcome;
use super::worker::Shared;
use crate::backoff::Backoff;
use crate::change::StreamId;
use crate::store::audit::StoredEntry;
use crate::store::sink_group::{self, HeldEntry};
use crate::store::StoreError;

/// How long an idle audit stream waits before it is read again.
const IDLE_POLL: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Delays between POSTs of a batch the app did not take.
const DELIVERY_RETRY: Backoff = Backoff::new(Duration::from_millis(100), RETRY_MAX);
/// Delays after failed stream reads.
const READ_RETRY: Backoff = Backoff::new(Duration::from_millis(200), RETRY_MAX);

/// Delivers the audit stream until `stop` (the lease was lost or given up,
/// or the sink stops); a POST in flight is finished first.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ready = false;
    let mut backoff = READ_RETRY;
    while !stop.is_cancelled() {
        let wait = match step(&shared, &mut ready, &stop).await {
            Ok(true) => {
                backoff.reset();
                continue;
            }
            Ok(false) => IDLE_POLL,
            Err(e) => {
                tracing::warn!(error = %e, "sink cannot read the audit stream; retrying");
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One batch: read, deliver, acknowledge. False when there was nothing.
async fn step(
    shared: &Shared,
    ready: &mut bool,
    stop: &CancellationToken,
) -> Result<bool, StoreError> {
    let store = &*shared.store;
    let stream = store.keys.audit();
    let (me, n) = (&shared.consumer, shared.batch);
    if !*ready {
        if sink_group::create_group_at(store, &stream, true).await? {
            tracing::info!("sink group created on the audit stream");
        }
        sink_group::claim_all_at(store, &stream, me, n.max(100)).await?;
        *ready = true;
    }
    let mut entries = sink_group::read_at(store, &stream, me, n, true).await?;
    if entries.is_empty() {
        entries = sink_group::read_at(store, &stream, me, n, false).await?;
    }
    if entries.is_empty() {
        return Ok(false);
    }
    let ids: Vec<StreamId> = entries.iter().map(|e| e.id).collect();
    let audit: Vec<Value> = entries.iter().filter_map(entry_json).collect();
    if !audit.is_empty() && !deliver(shared, stop, &audit, &entries).await? {
        return Ok(true);
    }
    sink_group::ack_at(store, &stream, &ids).await?;
    Ok(true)
}

/// An entry as the app gets it (as `GET /api/v1/audit` answers it);
/// `None` for one trimmed while pending.
fn entry_json(e: &HeldEntry) -> Option<Value> {
    let fields = e.fields.as_ref()?;
    let stored = StoredEntry {
        id: e.id.to_string(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect(),
    };
    Some(crate::audit::read::to_json(&stored))
}

/// POSTs `{"audit": entries}` until the app takes it or refuses it for
/// good (dead-lettered); false when `stop` came first.
async fn deliver(
    shared: &Shared,
    stop: &CancellationToken,
    audit: &[Value],
    held: &[HeldEntry],
) -> Result<bool, StoreError> {
    let body = serde_json::to_vec(&json!({ "audit": audit }))
        .map_err(|e| StoreError::Reply(format!("cannot encode a batch: {e}")))?;
    let mut backoff = DELIVERY_RETRY;
    loop {
        match shared.poster.post(body.clone(), audit.len()).await {
            Outcome::Delivered => return Ok(true),
            Outcome::Dead { status, reason } => {
                tracing::warn!(
                    status,
                    reason,
                    "the app refused an audit batch: dead-lettered"
                );
                let dead = shared.store.keys.audit_dead();
                sink_group::dead_letter_at(&shared.store, &dead, held, status, &reason).await?;
                return Ok(true);
            }
            Outcome::Retry(why) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    reason = why,
                    retry_in_ms = delay.as_millis() as u64,
                    "audit delivery failed; retrying"
                );
                tokio::select! {
                    _ = stop.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
