//! `sync_offline_changes`: a client's queued edits, committed in order
//! through the same function as live edits. Every change carries a
//! `clientChangeId`, so a batch sent again after a lost answer writes
//! nothing twice (repeats come back as `duplicate`).

use serde_json::{json, Value};

use super::dispatch::{forbidden, identity, send, to_value, Reply};
use super::Session;
use crate::protocol::messages::{parse, OfflineChange, OfflineCounts};
use crate::protocol::{ErrorCode, RequestError};
use crate::store::commit::{commit, CommitRequest, CommitResult, CommitStatus};

pub async fn sync(session: &mut Session, data: Value) -> Reply {
    let Value::Array(items) = data else {
        return Err(RequestError::bad_request(
            "sync_offline_changes takes an array of changes",
        ));
    };
    let app = session.app.clone();
    if items.len() > app.config.max_batch {
        return Err(RequestError::new(
            ErrorCode::PayloadTooLarge,
            format!("at most {} offline changes per batch", app.config.max_batch),
        ));
    }
    let user = identity(session)?;
    // Validate every change before committing any.
    let mut commits = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let change: OfflineChange = parse("offline change", item)
            .map_err(|e| RequestError::new(e.code, format!("[{i}]: {}", e.message)))?;
        if !user.grants.can_write(&change.table_id) {
            return Err(forbidden("write", &change.table_id));
        }
        let req = change
            .into_commit(&user.user_id, session.conn_id(), app.config.max_changes)
            .map_err(|e| RequestError::new(e.code, format!("[{i}]: {}", e.message)))?;
        commits.push(req);
    }
    let mut events = Vec::new();
    let mut rejected = Vec::new();
    let mut counts = OfflineCounts::default();
    for req in &commits {
        let result = commit(&app.store, req).await?;
        match result.status {
            CommitStatus::Applied | CommitStatus::Overwritten => counts.applied += 1,
            CommitStatus::Merged => counts.merged += 1,
            CommitStatus::Duplicate => counts.duplicates += 1,
            CommitStatus::Rejected => counts.rejected += 1,
        }
        if result.status == CommitStatus::Rejected {
            rejected.push(rejection(req, &result));
        } else if let Some(event) = change_event(req, &result) {
            events.push(event);
        }
    }
    send(
        session,
        "offline_changes",
        &json!({"events": events, "rejected": rejected}),
        None,
    );
    send(session, "offline_sync_complete", &counts, None);
    to_value(&counts)
}

/// The ChangeEvent a committed change became (as subscribers saw it).
fn change_event(req: &CommitRequest, result: &CommitResult) -> Option<Value> {
    let id = result.event_id.as_deref()?;
    let timestamp: u64 = id.split('-').next()?.parse().ok()?;
    let mut e = json!({
        "id": id, "type": req.kind, "entityType": req.entity_type, "entityId": req.entity_id,
        "tableId": req.table_id, "userId": req.user_id, "timestamp": timestamp,
        "version": result.version, "clientChangeId": req.client_change_id,
    });
    for (key, value) in [
        ("baseId", req.base_id.as_ref().map(|b| json!(b))),
        ("changes", req.changes.clone()),
        ("metadata", req.metadata.clone()),
    ] {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            e[key] = v;
        }
    }
    Some(e)
}

/// A rejected CommitResult, with the change it answers.
fn rejection(req: &CommitRequest, result: &CommitResult) -> Value {
    let mut v = serde_json::to_value(result).unwrap_or_else(|_| json!({"status": "rejected"}));
    v["entityId"] = json!(req.entity_id);
    v["tableId"] = json!(req.table_id);
    v["clientChangeId"] = json!(req.client_change_id);
    v
}
