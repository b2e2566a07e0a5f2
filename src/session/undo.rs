//! `undo` / `redo` (docs/protocol.md 3.3): revert the user's latest step on
//! a table, writing old values back only where nobody changed them since.
//!
//! Data flow: `route` → [`undo`] → write access checked → the top step
//! read (`store::undo::top_step`) → write grants checked on every field
//! it wrote → `store::undo::revert` (one FCALL, atomic) → the answer,
//! masked by the function for the reader's grants. When another
//! connection of the same user moved the stack between the read and the
//! call, the function answers `stale` and the step is read again, at most
//! [`ATTEMPTS`] times. Subscribers get the undo's events from the stream,
//! like any change; the records it deleted or undeleted go to the audit
//! log.

use serde_json::{json, Map, Value};

use super::reply::{forbidden, identity, read_mask, Answer, Reply};
use super::Session;
use crate::audit::AuditAction;
use crate::auth::Identity;
use crate::change::Visible;
use crate::grant::{Access, ReadMask};
use crate::metrics::UndoOutcome;
use crate::protocol::messages::UndoReq;
use crate::protocol::{ErrorCode, RequestError};
use crate::store::commit::CommitStatus;
use crate::store::undo::{revert, top_step, Direction, RevertCall, StepHead};

/// How many times a step is read again when the stack moved under it.
pub const ATTEMPTS: usize = 5;

/// Undoes (or redoes) the user's latest step on the request's table.
pub async fn undo(session: &mut Session, req: UndoReq, way: Direction) -> Reply {
    let (outcome, result) = match attempt(session, &req, way).await {
        Ok(Some(answer)) => (outcome_of(&answer.result), Ok(answer)),
        Ok(None) => {
            tracing::warn!(table = %req.table_id, way = way.as_str(), "undo stack kept changing; gave up");
            let busy = RequestError::new(
                ErrorCode::Unavailable,
                "the undo stack kept changing; retry",
            );
            (UndoOutcome::Busy, Err(busy))
        }
        Err(e) => (UndoOutcome::Error, Err(e)),
    };
    crate::metrics::undo_done(outcome);
    result
}

/// The answer, or `None` when the stack moved under every attempt.
async fn attempt(
    session: &Session,
    req: &UndoReq,
    way: Direction,
) -> Result<Option<Answer>, RequestError> {
    let user = identity(session)?;
    let table = req.table_id.as_str();
    if !user.grants.can_write(table) {
        return Err(forbidden("write", table));
    }
    super::reply::rows_unserved(user, table, "undo")?;
    let mut header = header(session, user, req, way);
    for _ in 0..ATTEMPTS {
        let step = top_step(&session.app.store, table, &user.user_id, way).await?;
        if let Some(step) = &step {
            check_fields(user, table, step)?;
        }
        header.insert(
            "stepId".into(),
            Value::from(step.as_ref().map_or("", |s| s.id.as_str())),
        );
        let header = Value::Object(header.clone());
        let call = RevertCall {
            table,
            user: &user.user_id,
            way,
            step: step.as_ref(),
            client_change_id: req.client_change_id.as_deref(),
            header: &header,
        };
        let answer = revert(&session.app.store, &call).await?;
        if answer.get("status").and_then(Value::as_str) != Some("stale") {
            audit(session, &user.user_id, table, &answer);
            return Ok(Some(Answer::from(answer)));
        }
        tracing::debug!(
            table,
            way = way.as_str(),
            "undo stack moved; reading it again"
        );
    }
    Ok(None)
}

/// The function's header (`lua/undo.lua`, ARGV 1) without the step id.
fn header(session: &Session, user: &Identity, req: &UndoReq, way: Direction) -> Map<String, Value> {
    let limits = session.app.commit_limits;
    let mut header = Map::new();
    header.insert("op".into(), Value::from(way.as_str()));
    header.insert("userId".into(), Value::from(user.user_id.as_str()));
    header.insert("tableId".into(), Value::from(req.table_id.as_str()));
    header.insert("origin".into(), Value::from(session.conn_id()));
    header.insert("maxRecordBytes".into(), json!(limits.max_record_bytes));
    header.insert("answerBytes".into(), json!(limits.answer_bytes));
    header.insert(
        "maxEventBytes".into(),
        json!(session.app.config.max_frame_bytes.get()),
    );
    header.insert(
        "recordHistory".into(),
        json!(session.app.store.record_history),
    );
    if let Some(cc) = &req.client_change_id {
        header.insert("clientChangeId".into(), Value::from(cc.as_str()));
    }
    let mask = read_mask(session, &req.table_id);
    match mask.as_deref().map(ReadMask::visible) {
        Some(Visible::AllBut(hidden)) => {
            header.insert("hiddenFields".into(), json!(hidden));
        }
        Some(Visible::Only(only)) => {
            header.insert("readableFields".into(), json!(only));
        }
        None => {}
    }
    header
}

/// Every field the step would write back must be writable by the user now
/// (grants may have changed since): refused as a change touching it is.
fn check_fields(user: &Identity, table: &str, step: &StepHead) -> Result<(), RequestError> {
    let grant = user
        .grants
        .table(table)
        .filter(|g| g.access == Access::ReadWrite)
        .ok_or_else(|| forbidden("write", table))?;
    let unwritable = step
        .recs
        .iter()
        .flat_map(|r| r.f.iter())
        .find(|f| grant.field(f) != crate::grant::FieldAccess::ReadWrite);
    match unwritable {
        Some(field) => Err(RequestError::new(
            ErrorCode::Forbidden,
            format!("no write access to field {field} of table {table}"),
        )),
        None => Ok(()),
    }
}

/// The records the undo deleted (undoing a create) or undeleted (undoing
/// a delete) go to the audit log, as a delete of the user would.
fn audit(session: &Session, user: &str, table: &str, answer: &Value) {
    let events = answer.get("events").and_then(Value::as_array);
    for e in events.into_iter().flatten() {
        let action = match e.get("type").and_then(Value::as_str) {
            Some("delete") => AuditAction::RecordDeleted,
            Some("create") => AuditAction::RecordUndeleted,
            _ => continue,
        };
        let record = e
            .get("recordId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        session.app.audit.record_changed(
            action,
            Some(session.peer),
            user,
            table,
            record,
            CommitStatus::Applied,
        );
    }
}

fn outcome_of(answer: &Value) -> UndoOutcome {
    match answer.get("status").and_then(Value::as_str) {
        Some("applied") => UndoOutcome::Applied,
        Some("partial") => UndoOutcome::Partial,
        Some("conflict") => UndoOutcome::Conflict,
        Some("nothing") => UndoOutcome::Nothing,
        Some("duplicate") => UndoOutcome::Duplicate,
        _ => UndoOutcome::Error,
    }
}
