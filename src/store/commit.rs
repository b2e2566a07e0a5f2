//! One change → one `FCALL rtsync_commit` (see `lua/rtsync.lua`): the version
//! check, the state write and the stream append happen atomically in Redis,
//! in one round trip. Every writer (WebSocket, HTTP API) uses [`commit`].

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Store, StoreError};
use crate::protocol::ids::check_id;
use crate::protocol::RequestError;

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

/// Outcome of a commit (PROTOCOL.md section 4, CommitResult).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommitResult {
    pub status: CommitStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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

/// What a client sends for one record change (`record_change`, an offline
/// change): the fields a commit needs besides who made it.
pub struct RecordChange {
    pub kind: String,
    pub record_id: String,
    pub table_id: String,
    pub base_id: Option<String>,
    pub changes: Option<Value>,
    pub metadata: Option<Value>,
    pub version: Option<u64>,
    pub client_change_id: Option<String>,
}

impl RecordChange {
    /// The validated commit of this change by `user_id` on connection `origin`.
    pub fn into_commit(
        self,
        user_id: &str,
        origin: &str,
        max_changes: usize,
    ) -> Result<CommitRequest, RequestError> {
        let req = CommitRequest {
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
        };
        req.validate(max_changes)?;
        Ok(req)
    }
}

const ENTITY_TYPES: [&str; 5] = ["record", "field", "table", "view", "base"];

impl CommitRequest {
    /// Checks everything the function would refuse, and the sidecar's own
    /// limits, before anything is sent.
    pub fn validate(&self, max_changes: usize) -> Result<(), RequestError> {
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
                        crate::protocol::ErrorCode::PayloadTooLarge,
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

/// Commits one validated change.
pub async fn commit(store: &Store, req: &CommitRequest) -> Result<CommitResult, StoreError> {
    let started = Instant::now();
    let result = call_commit(store, req).await;
    let result = match result {
        Err(StoreError::Other(e)) if is_missing_function(&e) => {
            // Redis restarted without persistence and lost the library.
            tracing::warn!("rtsync function library missing; loading it again");
            store.load_library().await?;
            call_commit(store, req).await
        }
        other => other,
    };
    crate::metrics::commit_done(
        started.elapsed(),
        result
            .as_ref()
            .map(|r| r.status.as_str())
            .unwrap_or("error"),
    );
    result
}

fn is_missing_function(e: &redis::RedisError) -> bool {
    e.to_string().contains("Function not found")
}

async fn call_commit(store: &Store, req: &CommitRequest) -> Result<CommitResult, StoreError> {
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
    let header = serde_json::to_string(req).map_err(|e| StoreError::Reply(e.to_string()))?;
    let json_or_empty = |v: &Option<Value>| match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(v) => serde_json::to_string(v),
    };
    let changes = json_or_empty(&req.changes).map_err(|e| StoreError::Reply(e.to_string()))?;
    let metadata = json_or_empty(&req.metadata).map_err(|e| StoreError::Reply(e.to_string()))?;

    let mut cmd = redis::cmd("FCALL");
    cmd.arg("rtsync_commit");
    match &req.client_change_id {
        Some(cc) => cmd.arg(3).arg(stream).arg(state).arg(keys.dedup(scope, cc)),
        None => cmd.arg(2).arg(stream).arg(state),
    };
    cmd.arg(header)
        .arg(changes)
        .arg(metadata)
        .arg(store.retention_ms);
    let mut conn = store.conn();
    let reply: String = cmd
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    serde_json::from_str(&reply).map_err(|e| StoreError::Reply(format!("{e}: {reply}")))
}
