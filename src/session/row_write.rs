//! v1.3 (2.2): `record_change` under a row grant. A user may write only
//! records that match their `rows` filter before the change (`USING`) and
//! after it (`WITH CHECK`); a create must match after it. Anything else is
//! `forbidden`, whole, with nothing written.
//!
//! Data flow: the record's state is read (`rtsync_load`, every field, so a
//! field the user cannot see still decides), the filter is evaluated on it
//! and on it with the change applied, then the change is committed with
//! `requireVersion` = the version read. The function refuses to write if the
//! record moved since (answer `rejected`, reason `moved`, not kept for the
//! clientChangeId), and the check runs again on the new state, at most
//! [`ATTEMPTS`] times. So the check and the write are atomic without a
//! second filter implementation in Lua.

use serde_json::{Map, Value};

use super::reply::identity;
use super::Session;
use crate::change::ValidChange;
use crate::filter::Filter;
use crate::protocol::{ErrorCode, RequestError};
use crate::store::commit::{commit, CommitResult, CommitStatus};
use crate::store::records::{load, Load, RecordState};

/// Reads and checks before giving up on a record that keeps moving.
pub const ATTEMPTS: usize = 3;

/// Commits `valid` if the user's `rows` allow it before and after.
pub async fn commit_in_rows(
    session: &Session,
    rows: &Filter,
    valid: &ValidChange,
) -> Result<CommitResult, RequestError> {
    let user = &identity(session)?.user_id;
    let table = valid.req.scope();
    let record = &valid.req.entity_id;
    let store = &session.app.store;
    for _ in 0..ATTEMPTS {
        let what = Load::Ids(vec![record.clone()]);
        let page = load(store, table, &what, session.app.config.max_page_bytes, None).await?;
        let state = page.records.into_iter().find(|r| &r.record_id == record);
        crate::metrics::rows_filtered(2, 0);
        if let Err(e) = check(rows, user, state.as_ref(), valid) {
            crate::metrics::rows_filtered(0, 1);
            tracing::debug!(table, record = %record, "row grant refused a write");
            return Err(e);
        }
        let mut attempt = valid.clone();
        attempt.require_version(state.map_or(0, |s| s.version));
        let result = commit(store, &attempt).await?;
        let moved =
            result.status == CommitStatus::Rejected && result.reason.as_deref() == Some("moved");
        if !moved {
            return Ok(result);
        }
    }
    tracing::warn!(table, record = %record, "record kept moving during a row-grant write");
    Err(RequestError::new(
        ErrorCode::Unavailable,
        format!("record {record} kept changing during the row-grant check; try again"),
    ))
}

/// `USING` on the record as it is (when it has a state that is not a
/// deleted record being created again), `WITH CHECK` on it with the change
/// applied (except for a delete).
fn check(
    rows: &Filter,
    user: &str,
    state: Option<&RecordState>,
    valid: &ValidChange,
) -> Result<(), RequestError> {
    let kind = valid.req.kind.as_str();
    let live = state.filter(|s| !(s.deleted && kind == "create"));
    if let Some(s) = live {
        if !rows.matches(&s.fields, user) {
            return Err(refused(format!(
                "record {} is outside your rows",
                valid.req.entity_id
            )));
        }
    }
    if kind == "delete" {
        return Ok(());
    }
    let mut after: Map<String, Value> = live.map(|s| s.fields.clone()).unwrap_or_default();
    for c in &valid.fields {
        match &c.new_value {
            Some(v) if !v.is_null() => {
                after.insert(c.field_id.clone(), v.clone());
            }
            _ => {
                after.remove(&c.field_id);
            }
        }
    }
    if rows.matches(&after, user) {
        return Ok(());
    }
    Err(refused(format!(
        "the change would leave record {} outside your rows",
        valid.req.entity_id
    )))
}

fn refused(message: String) -> RequestError {
    RequestError::new(ErrorCode::Forbidden, message)
}
