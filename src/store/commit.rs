//! One change → one `FCALL rtsync_commit` (see `lua/rtsync.lua`): the version
//! check, the state write and the stream append happen atomically in Redis,
//! in one round trip. Every writer (WebSocket, HTTP API) uses [`commit`].

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Store, StoreError};
use crate::protocol::ids::check_id;
use crate::protocol::{ErrorCode, RequestError};

/// A validated change, ready for the function.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub entity_type: String,
    pub entity_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_id: Option<String>,
    pub user_id: String,
    #[serde(skip)]
    pub changes: Option<Value>,
    #[serde(skip)]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// Outcome of a commit (docs/protocol.md section 4, CommitResult).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommitResult {
    pub status: CommitStatus,
    /// For a duplicate: the status of the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_status: Option<CommitStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
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

// The client's two shapes of a record change (`record_change`, an offline
// change) become a commit here, so the wire types need not know the store.
impl crate::protocol::messages::RecordChangeReq {
    /// The validated commit of this change by `user_id` on connection
    /// `origin`.
    pub fn into_commit(
        self,
        user_id: &str,
        origin: &str,
        limits: CommitLimits,
    ) -> Result<ValidCommit, RequestError> {
        CommitRequest {
            kind: self.kind,
            entity_type: "record".to_owned(),
            entity_id: self.record_id,
            table_id: Some(self.table_id),
            base_id: self.base_id,
            user_id: user_id.to_owned(),
            changes: self.changes,
            metadata: self.metadata,
            version: self.version,
            client_change_id: self.client_change_id,
            origin: Some(origin.to_owned()),
        }
        .validate(limits)
    }
}

impl crate::protocol::messages::OfflineChange {
    /// The same commit as the `record_change` it stands for.
    pub fn into_commit(
        self,
        user_id: &str,
        origin: &str,
        limits: CommitLimits,
    ) -> Result<ValidCommit, RequestError> {
        crate::protocol::messages::RecordChangeReq {
            kind: self.kind,
            record_id: self.entity_id,
            table_id: self.table_id,
            base_id: self.base_id,
            changes: self.changes,
            metadata: self.metadata,
            version: self.version,
            client_change_id: Some(self.client_change_id),
        }
        .into_commit(user_id, origin, limits)
    }
}

const ENTITY_TYPES: [&str; 5] = ["record", "field", "table", "view", "base"];

/// The largest version a record (or a change's base) may have: versions
/// travel through Lua as doubles, exact up to 2^53, and the next commit's
/// version must be exact too.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// Room for an event's own fields (id, type, ids, timestamp) on top of its
/// changes and metadata, when sizing it.
const EVENT_OVERHEAD: usize = 512;

/// The limits a change is checked against before anything is sent.
#[derive(Clone, Copy, Debug)]
pub struct CommitLimits {
    /// Most field changes in one change (`RTS_MAX_CHANGES`).
    pub max_changes: usize,
    /// Largest event, in either wire encoding (`RTS_MAX_FRAME_BYTES`): an
    /// event that one subscriber could not be sent is refused for all.
    pub max_event_bytes: usize,
    /// Largest record state (`RTS_MAX_RECORD_BYTES`), checked by the
    /// function against the state it holds.
    pub max_record_bytes: usize,
    /// Most bytes of field values one answer carries (`current`,
    /// conflicts): `RTS_MAX_PAGE_BYTES`, shared out over a batch.
    pub answer_bytes: usize,
}

impl CommitLimits {
    pub fn from_config(config: &crate::config::Config) -> CommitLimits {
        CommitLimits {
            max_changes: config.max_changes,
            max_event_bytes: config.max_frame_bytes,
            max_record_bytes: config.max_record_bytes,
            answer_bytes: config.max_page_bytes,
        }
    }

    /// The limits of each change of a batch of `n`: the answers of the
    /// whole batch share one answer bound, so a batch reply is bounded
    /// whatever the records hold.
    pub fn for_batch(self, n: usize) -> CommitLimits {
        CommitLimits {
            answer_bytes: self.answer_bytes / n.max(1),
            ..self
        }
    }
}

/// The function's first argument: the change and the limits it is held to.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Header<'a> {
    #[serde(flatten)]
    req: &'a CommitRequest,
    max_record_bytes: usize,
    answer_bytes: usize,
}

/// A change that passed every check, with the function's arguments encoded
/// once. [`commit`] takes nothing else, so every writer (live, offline, the
/// HTTP batch) validates first.
#[derive(Debug, Clone)]
pub struct ValidCommit {
    req: CommitRequest,
    header: String,
    changes: String,
    metadata: String,
    /// The JSON text of each field change's new value ("" for none): the
    /// bytes the record state keeps (see `lua/commit.lua`).
    values: Vec<String>,
}

impl ValidCommit {
    pub fn request(&self) -> &CommitRequest {
        &self.req
    }
}

impl CommitRequest {
    /// Checks everything the function would refuse, and the sidecar's own
    /// limits, before anything is sent; encodes the function's arguments.
    pub fn validate(self, limits: CommitLimits) -> Result<ValidCommit, RequestError> {
        self.check(limits.max_changes)?;
        let internal = |e: serde_json::Error| RequestError::new(ErrorCode::Internal, e.to_string());
        let header = serde_json::to_string(&Header {
            req: &self,
            max_record_bytes: limits.max_record_bytes,
            answer_bytes: limits.answer_bytes,
        })
        .map_err(internal)?;
        let json_or_empty = |v: &Option<Value>| match v {
            None | Some(Value::Null) => Ok(String::new()),
            Some(v) => serde_json::to_string(v),
        };
        let changes = json_or_empty(&self.changes).map_err(internal)?;
        let metadata = json_or_empty(&self.metadata).map_err(internal)?;
        let values = match &self.changes {
            Some(Value::Array(items)) => items
                .iter()
                .map(|c| match c.get("newValue") {
                    None | Some(Value::Null) => Ok(String::new()),
                    Some(v) => serde_json::to_string(v),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal)?,
            _ => Vec::new(),
        };
        let json_bytes = header.len() + changes.len() + metadata.len() + EVENT_OVERHEAD;
        // MessagePack is never more than 3× the JSON of the same value (a
        // float: 9 bytes against "1.0"), so it is only counted when that
        // bound could pass the limit: most commits skip the second pass.
        let msgpack_bytes = if json_bytes.saturating_mul(3) <= limits.max_event_bytes {
            json_bytes
        } else {
            msgpack_len(&self.changes) + msgpack_len(&self.metadata) + header.len() + EVENT_OVERHEAD
        };
        let largest = json_bytes.max(msgpack_bytes);
        if largest > limits.max_event_bytes {
            return Err(RequestError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "this change would be an event of {largest} bytes, over the {} bytes every subscriber can be sent (JSON {json_bytes}, MessagePack {msgpack_bytes})",
                    limits.max_event_bytes
                ),
            ));
        }
        Ok(ValidCommit {
            req: self,
            header,
            changes,
            metadata,
            values,
        })
    }

    fn check(&self, max_changes: usize) -> Result<(), RequestError> {
        if !ENTITY_TYPES.contains(&self.entity_type.as_str()) {
            return Err(RequestError::bad_request(
                "entityType must be record, field, table, view or base",
            ));
        }
        if self.entity_type == "record" {
            if !matches!(self.kind.as_str(), "create" | "update" | "delete") {
                return Err(RequestError::bad_request(
                    "type must be create, update or delete",
                ));
            }
        } else if self.kind.is_empty() || self.kind.len() > 32 {
            return Err(RequestError::bad_request("type must be 1..=32 bytes"));
        }
        check_id("entityId", &self.entity_id)?;
        check_id("userId", &self.user_id)?;
        if self.entity_type == "base" {
            check_id("baseId", self.base_id.as_deref().unwrap_or_default())?;
        } else {
            check_id("tableId", self.table_id.as_deref().unwrap_or_default())?;
            if let Some(b) = &self.base_id {
                check_id("baseId", b)?;
            }
        }
        if self.version.is_some_and(|v| v > MAX_VERSION) {
            return Err(RequestError::bad_request(format!(
                "version must be an integer in 0..={MAX_VERSION}"
            )));
        }
        if let Some(cc) = &self.client_change_id {
            if cc.is_empty() || cc.len() > 128 {
                return Err(RequestError::bad_request(
                    "clientChangeId must be 1..=128 bytes",
                ));
            }
        }
        match &self.changes {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                if items.len() > max_changes {
                    return Err(RequestError::new(
                        ErrorCode::PayloadTooLarge,
                        format!("at most {max_changes} field changes per change"),
                    ));
                }
                for (i, c) in items.iter().enumerate() {
                    let Some(obj) = c.as_object() else {
                        return Err(RequestError::bad_request(format!(
                            "changes[{i}] must be an object {{fieldId, oldValue?, newValue?}}"
                        )));
                    };
                    let field = obj.get("fieldId").and_then(Value::as_str).unwrap_or("");
                    check_id(&format!("changes[{i}].fieldId"), field)?;
                }
            }
            Some(_) => return Err(RequestError::bad_request("changes must be an array")),
        }
        match &self.metadata {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => return Err(RequestError::bad_request("metadata must be an object")),
        }
        Ok(())
    }

    /// The table (or base) whose slot holds this change's keys.
    fn scope(&self) -> &str {
        if self.entity_type == "base" {
            self.base_id.as_deref().unwrap_or_default()
        } else {
            self.table_id.as_deref().unwrap_or_default()
        }
    }
}

/// A writer that only counts: the size of an encoding without building it.
pub struct ByteCount(pub usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of a value as MessagePack, counted without building it.
fn msgpack_len(value: &Option<Value>) -> usize {
    let mut count = ByteCount(0);
    if let Some(v) = value {
        // Writing into a counter cannot fail; a value that came from JSON
        // or MessagePack always encodes.
        let _ = rmp_serde::encode::write_named(&mut count, v);
    }
    count.0
}

/// Validates every change of a batch (offline sync, the HTTP batch) before
/// any is committed: one invalid change refuses the whole batch, naming its
/// index, and nothing is written.
///
/// Each change is validated with `limits` shared out over the batch (see
/// [`CommitLimits::for_batch`]). One `clientChangeId` names one change: used
/// again in the batch for another change of the same user and table, it is
/// `bad_request` (the second would be answered `duplicate` with the first
/// one's event).
pub fn validate_batch<T>(
    items: Vec<T>,
    max_batch: usize,
    limits: CommitLimits,
    mut validate: impl FnMut(T, CommitLimits) -> Result<ValidCommit, RequestError>,
) -> Result<Vec<ValidCommit>, RequestError> {
    if items.len() > max_batch {
        return Err(RequestError::new(
            ErrorCode::PayloadTooLarge,
            format!("at most {max_batch} changes per batch"),
        ));
    }
    let each = limits.for_batch(items.len());
    let mut named: HashMap<(String, String, String), (usize, String)> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at =
            |e: RequestError| RequestError::new(e.code, format!("changes[{i}]: {}", e.message));
        let valid = validate(item, each).map_err(at)?;
        let req = valid.request();
        if let Some(cc) = &req.client_change_id {
            let key = (req.user_id.clone(), req.scope().to_owned(), cc.clone());
            let entity = format!("{}:{}", req.entity_type, req.entity_id);
            match named.get(&key) {
                Some((first, e)) if *e != entity => {
                    return Err(at(RequestError::bad_request(format!(
                        "clientChangeId {cc:?} already names changes[{first}] of another {}; one clientChangeId names one change",
                        req.entity_type
                    ))));
                }
                Some(_) => {}
                None => {
                    named.insert(key, (i, entity));
                }
            }
        }
        out.push(valid);
    }
    Ok(out)
}

/// Commits a validated batch in order. A Redis failure stops it: the
/// results so far come back with the error and the index it hit (a resend
/// with the same clientChangeIds answers the committed ones `duplicate`).
pub async fn commit_batch(
    store: &Store,
    commits: &[ValidCommit],
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
pub async fn commit(store: &Store, valid: &ValidCommit) -> Result<CommitResult, StoreError> {
    let started = Instant::now();
    let result = call_commit(store, valid).await;
    crate::metrics::commit_done(
        started.elapsed(),
        result
            .as_ref()
            .map(|r| r.status.as_str())
            .unwrap_or("error"),
    );
    result
}

async fn call_commit(store: &Store, valid: &ValidCommit) -> Result<CommitResult, StoreError> {
    let req = &valid.req;
    let keys = &store.keys;
    let scope = req.scope();
    let stream = if req.entity_type == "base" {
        keys.base_events(scope)
    } else {
        keys.events(scope)
    };
    let state = if req.entity_type == "record" {
        keys.record(scope, &req.entity_id)
    } else {
        keys.versions(scope)
    };
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("rtsync_commit");
    match &req.client_change_id {
        Some(cc) => cmd
            .arg(3)
            .arg(stream)
            .arg(state)
            .arg(keys.dedup(scope, &req.user_id, cc)),
        None => cmd.arg(2).arg(stream).arg(state),
    };
    cmd.arg(&valid.header)
        .arg(&valid.changes)
        .arg(&valid.metadata)
        .arg(store.retention_ms);
    for value in &valid.values {
        cmd.arg(value);
    }
    let reply: String = store.fcall(&cmd).await?;
    serde_json::from_str(&reply).map_err(|e| StoreError::Reply(format!("{e}: {reply}")))
}

#[cfg(test)]
mod tests {
    use super::msgpack_len;
    use serde_json::json;

    /// The bound `validate` relies on to skip counting MessagePack.
    #[test]
    fn messagepack_is_at_most_three_times_the_json() {
        for v in [
            json!([1.0, 2.0, 3.5, 0.0, -0.0, 1e300]),
            json!([0, 1, 127, 128, -1, -33, 65536, u64::MAX, i64::MIN]),
            json!([[], {}, "", "x", null, true, false]),
            json!({"a": [{"b": [1.0]}], "": {}}),
            json!("\u{1}\u{2}é"),
        ] {
            let json_len = serde_json::to_vec(&v).unwrap().len();
            assert!(msgpack_len(&Some(v.clone())) <= 3 * json_len, "{v}");
        }
    }
}
