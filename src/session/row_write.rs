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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{ChangeLimits, ChangeRequest};
    use serde_json::json;

    fn change(kind: &str, fields: Value) -> ValidChange {
        let req: ChangeRequest = serde_json::from_value(json!({
            "type": kind, "recordId": "r1", "tableId": "t", "baseId": "b", "changes": fields
        }))
        .unwrap();
        let limits = ChangeLimits {
            max_changes: 100,
            max_event_bytes: 1 << 20,
            max_record_bytes: 1 << 20,
            answer_bytes: 1 << 20,
        };
        req.by_client("ann", "c1").validate(limits).unwrap()
    }

    fn state(owner: &str, deleted: bool) -> RecordState {
        RecordState {
            record_id: "r1".into(),
            version: 3,
            deleted,
            fields: json!({"owner": owner, "note": "n"})
                .as_object()
                .cloned()
                .unwrap(),
        }
    }

    fn mine() -> Filter {
        Filter::parse(
            &json!({"field": "owner", "op": "eq", "value": "$user"}),
            "rows",
        )
        .unwrap()
    }

    fn note() -> Value {
        json!([{"fieldId": "note", "newValue": "x"}])
    }

    #[test]
    fn an_edit_of_a_record_inside_the_rows_that_stays_inside_passes() {
        assert!(check(
            &mine(),
            "ann",
            Some(&state("ann", false)),
            &change("update", note())
        )
        .is_ok());
    }

    #[test]
    fn using_refuses_a_record_outside_the_rows_whatever_the_change() {
        let give = json!([{"fieldId": "owner", "newValue": "ann"}]);
        let e = check(
            &mine(),
            "ann",
            Some(&state("bob", false)),
            &change("update", give),
        )
        .unwrap_err();
        assert!(e.message.contains("outside your rows"), "{}", e.message);
        assert!(check(
            &mine(),
            "ann",
            Some(&state("bob", false)),
            &change("delete", json!([]))
        )
        .is_err());
    }

    #[test]
    fn with_check_refuses_a_change_taking_the_record_out() {
        let away = json!([{"fieldId": "owner", "newValue": "bob"}]);
        let e = check(
            &mine(),
            "ann",
            Some(&state("ann", false)),
            &change("update", away),
        )
        .unwrap_err();
        assert!(e.message.contains("would leave"), "{}", e.message);
        let cleared = json!([{"fieldId": "owner", "newValue": null}]);
        assert!(check(
            &mine(),
            "ann",
            Some(&state("ann", false)),
            &change("update", cleared)
        )
        .is_err());
    }

    #[test]
    fn a_create_must_match_and_starts_fresh_over_a_deleted_record() {
        let own = json!([{"fieldId": "owner", "newValue": "ann"}]);
        assert!(check(&mine(), "ann", None, &change("create", own.clone())).is_ok());
        assert!(check(
            &mine(),
            "ann",
            Some(&state("bob", true)),
            &change("create", own)
        )
        .is_ok());
        assert!(check(&mine(), "ann", None, &change("create", note())).is_err());
    }
}
