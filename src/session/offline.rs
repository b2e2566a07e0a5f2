//! `sync_offline_changes`: a client's queued edits, committed in order
//! through the same function as live edits. Every change carries a
//! `clientChangeId`, so a batch sent again after a lost answer writes
//! nothing twice (repeats come back as `duplicate`).

use serde_json::{json, Value};

use super::reply::{forbidden, identity, send, to_value, Reply};
use super::Session;
use crate::protocol::messages::{parse, OfflineChange, OfflineCounts};
use crate::protocol::RequestError;
use crate::store::commit::{
    commit_batch, validate_batch, CommitRequest, CommitResult, CommitStatus,
};

pub async fn sync(session: &mut Session, data: Value) -> Reply {
    let Value::Array(items) = data else {
        return Err(RequestError::bad_request(
            "sync_offline_changes takes an array of changes",
        ));
    };
    let app = session.app.clone();
    let user = identity(session)?;
    let commits = validate_batch(
        items,
        app.config.max_batch,
        app.commit_limits,
        |item, limits| {
            let change: OfflineChange = parse("offline change", item)?;
            if !user.grants.can_write(&change.table_id) {
                return Err(forbidden("write", &change.table_id));
            }
            change.into_commit(&user.user_id, session.conn_id(), limits)
        },
    )?;
    let (results, failed) = commit_batch(&app.store, &commits).await;
    if let Some((i, e)) = failed {
        let e = RequestError::from(e);
        return Err(RequestError::new(
            e.code,
            format!("changes[{i}]: {}", e.message),
        ));
    }
    let mut events = Vec::new();
    let mut rejected = Vec::new();
    let mut counts = OfflineCounts::default();
    let mut answers = Vec::with_capacity(results.len());
    for (valid, result) in commits.iter().zip(&results) {
        let req = valid.request();
        answers.push(answer(req, result));
        match result.status {
            CommitStatus::Applied | CommitStatus::Overwritten => counts.applied += 1,
            CommitStatus::Merged => counts.merged += 1,
            CommitStatus::Duplicate => counts.duplicates += 1,
            CommitStatus::Rejected => counts.rejected += 1,
        }
        // A resend of a rejected change is a duplicate of a rejection: the
        // client learns it was rejected, again.
        let rejection_again = result.original_status == Some(CommitStatus::Rejected);
        if result.status == CommitStatus::Rejected || rejection_again {
            rejected.push(answer(req, result));
        } else if let Some(event) = change_event(req, result) {
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
    // The ack also carries every change's own CommitResult, in order
    // (`results`, an rtsync addition v1 clients ignore), so a client settles
    // each queued edit with the server's real answer.
    let mut ack = to_value(&counts)?;
    ack.result["results"] = Value::Array(answers);
    Ok(ack)
}

/// A change's CommitResult, with its `clientChangeId` and record.
fn answer(req: &CommitRequest, result: &CommitResult) -> Value {
    let mut v = serde_json::to_value(result).unwrap_or_else(|_| json!({"status": "rejected"}));
    v["entityId"] = json!(req.entity_id);
    v["tableId"] = json!(req.table_id);
    v["clientChangeId"] = json!(req.client_change_id);
    v
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
