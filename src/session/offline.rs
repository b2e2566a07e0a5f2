//! `sync_offline_changes`: a client's queued edits, committed in order
//! through the same function as live edits. Every change carries a
//! `clientChangeId`, so a batch sent again after a lost answer writes
//! nothing twice (repeats come back as `duplicate`).
//!
//! Data flow: `route` → [`sync`] → `commit_all` (each change through
//! `store::commit`) → `visible` (masked for the writer, once) → the
//! `offline_changes` and `offline_sync_complete` frames and the ack.

use serde_json::{json, Value};

use super::reply::{check_write, read_mask, send, to_value, Reply};
use super::Session;
use crate::change::{ChangeEvent, Located, ValidChange};
use crate::grant::{masking, ReadMask};
use crate::protocol::messages::OfflineCounts;
use crate::protocol::{RequestError, ServerEvent};
use crate::store::commit::{commit, CommitResult, CommitStatus};

/// Commits a batch (every change validated already, its table writable:
/// see [`super::request`]) in order, then sends `offline_changes` and
/// `offline_sync_complete` and answers with the counts and each change's
/// result.
pub async fn sync(session: &mut Session, mut commits: Vec<ValidChange>) -> Reply {
    let results = commit_all(session, &mut commits).await?;
    let mut events = Vec::new();
    let mut rejected = Vec::new();
    let mut counts = OfflineCounts::default();
    let mut answers = Vec::with_capacity(results.len());
    for (valid, result) in commits.iter().zip(results) {
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                counts.rejected += 1;
                let refused = refusal(valid, &e);
                rejected.push(refused.clone());
                answers.push(refused);
                continue;
            }
        };
        let (result, event) = visible(session, valid, result);
        answers.push(answer(valid, &result));
        count(&mut counts, result.status);
        if is_rejection(&result) {
            rejected.push(answer(valid, &result));
        }
        events.extend(event);
    }
    send(
        session,
        ServerEvent::OfflineChanges,
        &json!({"events": events, "rejected": rejected}),
        None,
    );
    send(session, ServerEvent::OfflineSyncComplete, &counts, None);
    // The ack also carries every change's own CommitResult, in order
    // (`results`, an rtsync addition v1 clients ignore), so a client settles
    // each queued edit with the server's real answer.
    let mut ack = to_value(&counts)?;
    ack.result["results"] = Value::Array(answers);
    Ok(ack)
}

/// Commits each change in order. A change touching a field the user may
/// not write is refused alone: the others still commit (docs/protocol.md
/// 2.1). A storage failure ends the batch, naming the change.
async fn commit_all(
    session: &Session,
    commits: &mut [ValidChange],
) -> Result<Vec<Result<CommitResult, RequestError>>, RequestError> {
    let app = session.app.clone();
    let user = super::reply::identity(session)?;
    let mut results = Vec::with_capacity(commits.len());
    for (i, valid) in commits.iter_mut().enumerate() {
        let checked = check_write(user, valid).and_then(|()| {
            super::reply::rows_unserved(user, valid.req.scope(), "sync_offline_changes")
        });
        if let Err(e) = checked {
            results.push(Err(e));
            continue;
        }
        let mask = read_mask(session, valid.req.scope());
        valid
            .answered_to(mask.as_deref().map(ReadMask::visible))
            .map_err(RequestError::from)?;
        match commit(&app.store, valid).await {
            Ok(r) => {
                app.audit
                    .committed(session.peer, &user.user_id, valid, r.status);
                super::base_access::bind_by_write(session, valid).await;
                results.push(Ok(r));
            }
            Err(e) => return Err(RequestError::from(e).at(&format!("changes[{i}]"))),
        }
    }
    Ok(results)
}

/// What the writer may read of a committed change: its result, and the
/// event it became as subscribers were sent it (`None` for a rejection, or
/// an event hidden from the writer). The one place the offline answer and
/// `offline_changes` are masked.
fn visible(
    session: &Session,
    valid: &ValidChange,
    mut result: CommitResult,
) -> (CommitResult, Option<ChangeEvent>) {
    let mask = read_mask(session, valid.req.scope());
    masking::commit_result(&mut result, mask.as_deref());
    let event = match result.event_id {
        Some(id) if !is_rejection(&result) => {
            let event = ChangeEvent::committed(valid, id, result.version);
            masking::owned_event(event, mask.as_deref())
        }
        _ => None,
    };
    (result, event)
}

/// Whether a change was rejected, now or (a resend: a duplicate of a
/// rejection, so the client learns it was rejected, again) before.
fn is_rejection(result: &CommitResult) -> bool {
    result.status == CommitStatus::Rejected
        || result.original_status == Some(CommitStatus::Rejected)
}

/// Counts a committed change by its status.
fn count(counts: &mut OfflineCounts, status: CommitStatus) {
    match status {
        CommitStatus::Applied | CommitStatus::Overwritten => counts.applied += 1,
        CommitStatus::Merged => counts.merged += 1,
        CommitStatus::Duplicate => counts.duplicates += 1,
        CommitStatus::Rejected => counts.rejected += 1,
    }
}

/// The answer of a change refused before it was sent (a field the user
/// may not write): `rejected`, with the error, as the client settles a
/// refused request.
fn refusal(valid: &ValidChange, e: &RequestError) -> Value {
    let req = &valid.req;
    json!({"status": "rejected", "version": 0, "reason": e.code,
        "error": {"code": e.code, "message": e.message},
        "entityId": req.entity_id, "tableId": req.table_id,
        "clientChangeId": req.client_change_id})
}

/// A change's CommitResult, with its `clientChangeId` and record.
fn answer(valid: &ValidChange, result: &CommitResult) -> Value {
    let req = &valid.req;
    let mut v = serde_json::to_value(result).unwrap_or_else(|_| json!({"status": "rejected"}));
    v["entityId"] = json!(req.entity_id);
    v["tableId"] = json!(req.table_id);
    v["clientChangeId"] = json!(req.client_change_id);
    v
}
