//! `sync_offline_changes`: a client's queued edits, committed in order
//! through the same function as live edits. Every change carries a
//! `clientChangeId`, so a batch sent again after a lost answer writes
//! nothing twice (repeats come back as `duplicate`).

use serde_json::{json, Value};

use super::reply::{check_write, forbidden, identity, read_mask, send, to_value, Reply};
use super::Session;
use crate::change::{validate_batch, ChangeEvent, ChangeRequest, ValidChange};
use crate::grant::{masking, ReadMask};
use crate::protocol::messages::{parse, OfflineCounts};
use crate::protocol::{RequestError, ServerEvent};
use crate::store::commit::{commit, CommitResult, CommitStatus};

#[allow(clippy::too_many_lines)] // split by the session refactor
pub async fn sync(session: &mut Session, data: Value) -> Reply {
    let Value::Array(items) = data else {
        return Err(RequestError::bad_request(
            "sync_offline_changes takes an array of changes",
        ));
    };
    let app = session.app.clone();
    let user = identity(session)?;
    let mut commits = validate_batch(
        items,
        app.config.max_batch,
        app.commit_limits,
        |item, limits| {
            let change: ChangeRequest = parse("offline change", item)?;
            if change.client_change_id.is_none() {
                return Err(RequestError::bad_request(
                    "an offline change needs its clientChangeId",
                ));
            }
            let valid = change
                .by_client(&user.user_id, session.conn_id())
                .validate(limits)?;
            let table = valid.req.scope();
            if !user.grants.can_write(table) {
                return Err(forbidden("write", table));
            }
            Ok(valid)
        },
    )?;
    // A change touching a field the user may not write is refused alone:
    // the others still commit (docs/protocol.md 2.1).
    let mut results = Vec::with_capacity(commits.len());
    for (i, valid) in commits.iter_mut().enumerate() {
        if let Err(e) = check_write(user, valid) {
            results.push(Err(e));
            continue;
        }
        let mask = read_mask(session, valid.req.scope());
        valid
            .answered_to(mask.as_deref().map(ReadMask::visible))
            .map_err(RequestError::from)?;
        match commit(&app.store, valid).await {
            Ok(mut r) => {
                super::base_access::bind_by_write(session, valid).await;
                masking::commit_result(&mut r, mask.as_deref());
                results.push(Ok(r));
            }
            Err(e) => {
                let e = RequestError::from(e);
                return Err(RequestError::new(
                    e.code,
                    format!("changes[{i}]: {}", e.message),
                ));
            }
        }
    }
    let mut events = Vec::new();
    let mut rejected = Vec::new();
    let mut counts = OfflineCounts::default();
    let mut answers = Vec::with_capacity(results.len());
    for (valid, result) in commits.iter().zip(&results) {
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                counts.rejected += 1;
                let refused = refusal(valid, e);
                rejected.push(refused.clone());
                answers.push(refused);
                continue;
            }
        };
        answers.push(answer(valid, result));
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
            rejected.push(answer(valid, result));
        } else if let Some(id) = result.event_id {
            // The event this change became, as subscribers were sent it
            // (masked as they were).
            let event = ChangeEvent::committed(valid, id, result.version);
            let mask = read_mask(session, valid.req.scope());
            events.extend(masking::owned_event(event, mask.as_deref()));
        }
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
