//! The one task that writes the audit log: it owns the queue [`super::Audit`]
//! fills, takes what is waiting (up to one FCALL's worth), and appends it
//! with `rtsync_audit` in one call, retrying a failed call a few times
//! before it drops the batch (counted and logged). On shutdown it writes
//! what the queue still holds, then ends; the sidecar joins it.
//!
//! Data flow: `Audit::submit` → the queue → [`run`] → `store::audit::append`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Entry;
use crate::backoff::Backoff;
use crate::metrics::AuditDropped;
use crate::store::audit::{append, MAX_RECORDS_PER_CALL};
use crate::store::Store;

/// Attempts of one batch before it is dropped.
const ATTEMPTS: usize = 3;

/// Writes queued records until `stop` is cancelled, then drains the queue.
pub async fn run(
    store: Arc<Store>,
    mut queue: mpsc::Receiver<Entry>,
    retention: Duration,
    stop: CancellationToken,
) {
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    let mut batch = Vec::with_capacity(MAX_RECORDS_PER_CALL);
    loop {
        batch.clear();
        let n = tokio::select! {
            n = queue.recv_many(&mut batch, MAX_RECORDS_PER_CALL) => n,
            _ = stop.cancelled() => break,
        };
        if n == 0 {
            return;
        }
        write(&store, &batch, retention_ms, ATTEMPTS).await;
    }
    queue.close();
    loop {
        batch.clear();
        if queue.recv_many(&mut batch, MAX_RECORDS_PER_CALL).await == 0 {
            return;
        }
        write(&store, &batch, retention_ms, 1).await;
    }
}

/// Appends one batch, trying up to `attempts` times.
async fn write(store: &Store, batch: &[Entry], retention_ms: u64, attempts: usize) {
    let records: Vec<String> = batch
        .iter()
        .filter_map(|e| match serde_json::to_string(e) {
            Ok(text) => Some(text),
            Err(err) => {
                tracing::error!(error = %err, "cannot encode an audit record");
                crate::metrics::audit_dropped(AuditDropped::WriteFailed, 1);
                None
            }
        })
        .collect();
    if records.is_empty() {
        return;
    }
    let mut backoff = Backoff::reconnect();
    let never = CancellationToken::new();
    for attempt in 1..=attempts {
        match append(store, retention_ms, &records).await {
            Ok(ids) => {
                crate::metrics::audit_written(ids.len());
                return;
            }
            Err(e) => {
                crate::metrics::audit_write_failed();
                tracing::warn!(error = %e, attempt, records = records.len(), "cannot append to the audit log");
            }
        }
        if attempt < attempts {
            backoff.wait(&never).await;
        }
    }
    crate::metrics::audit_dropped(AuditDropped::WriteFailed, records.len());
    tracing::error!(
        records = records.len(),
        "audit records dropped: the audit log could not be written"
    );
}
