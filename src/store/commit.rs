//! One change → one `FCALL rtsync_commit` (see `lua/rtsync.lua`): the version
//! check, the state write and the stream append happen atomically in Redis,
//! in one round trip. Every writer (WebSocket, offline sync, HTTP API) hands
//! it a [`ValidChange`] (see `crate::change`).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Store, StoreError};
use crate::change::{StreamId, ValidChange};
use crate::metrics::CommitOutcome;

/// Outcome of a commit (docs/protocol.md section 4, CommitResult).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommitResult {
    pub status: CommitStatus,
    /// For a duplicate: the status of the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_status: Option<CommitStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<StreamId>,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Field values were left out of `current` or `conflicts` to keep the
    /// answer within its byte bound (`lua/commit.lua`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CommitStatus {
    Applied,
    Merged,
    Overwritten,
    Rejected,
    Duplicate,
}

impl CommitStatus {
    /// Its label in the commits metric.
    pub fn label(self) -> CommitOutcome {
        match self {
            CommitStatus::Applied => CommitOutcome::Applied,
            CommitStatus::Merged => CommitOutcome::Merged,
            CommitStatus::Overwritten => CommitOutcome::Overwritten,
            CommitStatus::Rejected => CommitOutcome::Rejected,
            CommitStatus::Duplicate => CommitOutcome::Duplicate,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CommitStatus::Applied => "applied",
            CommitStatus::Merged => "merged",
            CommitStatus::Overwritten => "overwritten",
            CommitStatus::Rejected => "rejected",
            CommitStatus::Duplicate => "duplicate",
        }
    }
}

/// Commits a validated batch in order. A Redis failure stops it: the
/// results so far come back with the error and the index it hit (a resend
/// with the same clientChangeIds answers the committed ones `duplicate`).
pub async fn commit_batch(
    store: &Store,
    commits: &[ValidChange],
) -> (Vec<CommitResult>, Option<(usize, StoreError)>) {
    let mut results = Vec::with_capacity(commits.len());
    for (i, valid) in commits.iter().enumerate() {
        match commit(store, valid).await {
            Ok(r) => results.push(r),
            Err(e) => return (results, Some((i, e))),
        }
    }
    (results, None)
}

/// Commits one validated change.
pub async fn commit(store: &Store, valid: &ValidChange) -> Result<CommitResult, StoreError> {
    let started = Instant::now();
    let result = call_commit(store, valid).await;
    let outcome = result
        .as_ref()
        .map_or(CommitOutcome::Error, |r| r.status.label());
    crate::metrics::commit_done(started.elapsed(), outcome);
    result
}

/// A record change's header with `recordHistory` (the cap of its history
/// index, `RTS_RECORD_HISTORY`): the key list then carries the index
/// (`Keys::commit_keys`), and the field is how `lua/commit.lua` tells that
/// form; and with `maxEventBytes`, the bound its stream entry keeps to
/// once the function adds the old values. The header is a JSON object
/// serde wrote, never empty.
fn with_record_history(header: &str, cap: usize, max_event: usize) -> std::borrow::Cow<'_, str> {
    match header.strip_suffix('}') {
        Some(open) => std::borrow::Cow::Owned(format!(
            "{open},\"recordHistory\":{cap},\"maxEventBytes\":{max_event}}}"
        )),
        None => std::borrow::Cow::Borrowed(header),
    }
}

async fn call_commit(store: &Store, valid: &ValidChange) -> Result<CommitResult, StoreError> {
    let req = &valid.req;
    let dedup = req
        .client_change_id
        .as_deref()
        .map(|cc| (req.user_id.as_str(), cc));
    let mut keys = store
        .keys
        .commit_keys(req.scope(), &req.entity_type, &req.entity_id, dedup);
    if valid.undo.is_some() {
        keys.extend(store.keys.commit_undo_keys(req.scope(), &req.user_id));
    }
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("rtsync_commit").arg(keys.len()).arg(&keys);
    let header = match req.entity_type.as_str() {
        "record" => {
            with_record_history(&valid.header, store.record_history, valid.max_event_bytes())
        }
        _ => std::borrow::Cow::Borrowed(valid.header.as_str()),
    };
    cmd.arg(&*header)
        .arg(&valid.changes_json)
        .arg(&valid.metadata_json)
        .arg(store.retention_ms);
    for value in &valid.values {
        cmd.arg(value);
    }
    let reply: String = store.fcall_durable(&cmd).await?;
    serde_json::from_str(&reply).map_err(|e| StoreError::Reply(format!("{e}: {reply}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_header_names_its_history_cap_last() {
        assert_eq!(
            with_record_history(r#"{"type":"update"}"#, 7, 1024),
            r#"{"type":"update","recordHistory":7,"maxEventBytes":1024}"#
        );
    }
}
