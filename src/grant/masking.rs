//! Applying a [`ReadMask`] to what leaves the sidecar (docs/protocol.md
//! 2.1): change events, record states, commit results and presence. A
//! hidden field is absent, as if it did not exist. Masking always happens
//! on values, before anything is encoded; the hub masks an event once per
//! permission class and encodes that copy once per wire encoding.
//!
//! Record events lose their hidden field changes (all of them: `changes:
//! []`, still delivered with the record's version, so the version rule
//! holds). A `field` event about a hidden field is not delivered at all: its
//! id is the hidden field's. Table, view and base events pass unchanged.
//!
//! Where masking happens: one place per path, where that path's answer is
//! made, and nowhere else:
//! - live fan-out: the hub's `class_events` (events, once per permission
//!   class) and its presence-notice fan-out ([`notice`]), `src/hub.rs`;
//! - `record_change`'s answer: `session::commit::record_change`
//!   ([`commit_result`]);
//! - `sync_offline_changes`' answer and `offline_changes`:
//!   `session::offline::visible` (the result and the event, together);
//! - `load_records`' page: `session::records::load` ([`fields`]; the
//!   function already leaves hidden fields out, this is the guarantee);
//! - `recent_changes`: `session::tables::history::recent_events` (while
//!   reading, as the byte bound counts the masked events);
//! - `missed_events`: `session::tables::replay::replay` (per page, before
//!   frames are cut);
//! - `record_history` (v1.3): `session::record_history::page` (while
//!   reading, as the byte bound counts the masked events; `oldValue` goes
//!   with its field change, like `newValue`);
//! - `table_users`: `session::tables::join::masked_users`
//!   ([`presence_user`]).

use serde_json::{Map, Value};

use super::ReadMask;
use crate::change::ChangeEvent;
use crate::protocol::ServerEvent;
use crate::store::commit::CommitResult;

/// An event as one permission class sees it.
pub enum Masked<'a> {
    /// Nothing in it is hidden: the original, with its cached bytes.
    Same(&'a ChangeEvent),
    /// A copy without the hidden field changes.
    Changed(Box<ChangeEvent>),
    /// Not delivered to this class.
    Hidden,
}

impl Masked<'_> {
    /// The event to send, if any.
    pub fn event(&self) -> Option<&ChangeEvent> {
        match self {
            Masked::Same(e) => Some(e),
            Masked::Changed(e) => Some(e),
            Masked::Hidden => None,
        }
    }

    /// Whether the class sees exactly the original.
    pub fn is_same(&self) -> bool {
        matches!(self, Masked::Same(_))
    }
}

fn hidden_entity(e: &ChangeEvent, mask: &ReadMask) -> bool {
    e.entity_type == "field" && !mask.readable(&e.entity_id)
}

fn readable_change(c: &Value, mask: &ReadMask) -> bool {
    c.get("fieldId")
        .and_then(Value::as_str)
        .is_some_and(|f| mask.readable(f))
}

/// The record event's changes, if masking removes any of them.
fn hides_changes(e: &ChangeEvent, mask: &ReadMask) -> bool {
    e.entity_type == "record"
        && matches!(&e.changes, Some(Value::Array(items)) if !items.iter().all(|c| readable_change(c, mask)))
}

/// `e` as the class of `mask` sees it, copying only when something is
/// hidden.
pub fn event<'a>(e: &'a ChangeEvent, mask: &ReadMask) -> Masked<'a> {
    if hidden_entity(e, mask) {
        return Masked::Hidden;
    }
    if !hides_changes(e, mask) {
        return Masked::Same(e);
    }
    let kept = match &e.changes {
        Some(Value::Array(items)) => items
            .iter()
            .filter(|c| readable_change(c, mask))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    Masked::Changed(Box::new(e.with_changes(Some(Value::Array(kept)))))
}

/// Masks an owned event in place (history, recovery, offline answers);
/// `None` when the class does not see it.
pub fn owned_event(mut e: ChangeEvent, mask: Option<&ReadMask>) -> Option<ChangeEvent> {
    let Some(mask) = mask else { return Some(e) };
    if hidden_entity(&e, mask) {
        return None;
    }
    if hides_changes(&e, mask) {
        if let Some(Value::Array(items)) = &mut e.changes {
            items.retain(|c| readable_change(c, mask));
        }
        e.forget_encodings();
    }
    Some(e)
}

/// [`owned_event`] over a list.
pub fn owned_events(events: Vec<ChangeEvent>, mask: Option<&ReadMask>) -> Vec<ChangeEvent> {
    match mask {
        None => events,
        Some(_) => events
            .into_iter()
            .filter_map(|e| owned_event(e, mask))
            .collect(),
    }
}

/// A record's field values (a RecordState's `fields`, a rejection's
/// `current.fields`) without the hidden ones.
pub fn fields(values: &mut Map<String, Value>, mask: &ReadMask) {
    values.retain(|f, _| mask.readable(f));
}

/// A CommitResult's `current` and `conflicts` without hidden fields.
pub fn commit_result(result: &mut CommitResult, mask: Option<&ReadMask>) {
    let Some(mask) = mask else { return };
    if let Some(Value::Object(values)) = result.current.as_mut().and_then(|c| c.get_mut("fields")) {
        fields(values, mask);
    }
    if let Some(Value::Array(conflicts)) = &mut result.conflicts {
        conflicts.retain(|c| readable_change(c, mask));
    }
}

/// Whether a cursor or selection (`{fieldId}` or `{startFieldId,
/// endFieldId}`) points only at readable fields.
fn position_readable(position: &Value, mask: &ReadMask) -> bool {
    ["fieldId", "startFieldId", "endFieldId"]
        .iter()
        .filter_map(|k| position.get(*k).and_then(Value::as_str))
        .all(|f| mask.readable(f))
}

/// A UserPresence without a cursor or selection on a hidden field.
pub fn presence_user(user: &mut Value, mask: &ReadMask) {
    let Value::Object(doc) = user else { return };
    for key in ["cursor", "selection"] {
        if doc.get(key).is_some_and(|p| !position_readable(p, mask)) {
            doc.remove(key);
        }
    }
}

/// A presence notice as one class sees it: a cursor or selection on a
/// hidden field is dropped; a joining user's is stripped.
pub fn notice(event: ServerEvent, data: &Value, mask: &ReadMask) -> Option<Value> {
    match event {
        ServerEvent::CursorPosition => {
            position_readable(data.get("cursor").unwrap_or(&Value::Null), mask)
                .then(|| data.clone())
        }
        ServerEvent::Selection => {
            position_readable(data.get("selection").unwrap_or(&Value::Null), mask)
                .then(|| data.clone())
        }
        ServerEvent::UserJoined | ServerEvent::UserReconnected => {
            let mut user = data.clone();
            presence_user(&mut user, mask);
            Some(user)
        }
        _ => Some(data.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::event::fixtures::{entry, id};
    use crate::protocol::Encoding;
    use serde_json::json;

    fn mask() -> ReadMask {
        ReadMask::new(true, vec!["salary".into()]).unwrap()
    }

    fn record_event(changes: &str) -> ChangeEvent {
        let f = entry(&[
            ("type", b"update"),
            ("entityType", b"record"),
            ("entityId", b"r1"),
            ("userId", b"u1"),
            ("version", b"7"),
            ("changes", changes.as_bytes()),
        ]);
        ChangeEvent::from_entry(id("1-0"), &f, Some("t")).unwrap()
    }

    #[test]
    fn an_event_without_hidden_fields_is_the_original() {
        let e = record_event(r#"[{"fieldId":"name","newValue":"a"}]"#);
        assert!(event(&e, &mask()).is_same());
    }

    #[test]
    fn hidden_changes_are_removed_and_the_version_kept() {
        let e = record_event(
            r#"[{"fieldId":"salary","oldValue":1,"newValue":90000},{"fieldId":"name","newValue":"a"}]"#,
        );
        let _ = e.encoded(Encoding::Json);
        let m = event(&e, &mask());
        let seen = m.event().unwrap();
        let bytes = seen.encoded(Encoding::Json);
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(
            !text.contains("salary") && !text.contains("90000"),
            "{text}"
        );
        assert_eq!(seen.version, 7);
        let owned = owned_event(e, Some(&mask())).unwrap();
        let text = String::from_utf8(owned.encoded(Encoding::Json).to_vec()).unwrap();
        assert!(
            !text.contains("90000"),
            "a stale encoding is dropped: {text}"
        );
    }

    #[test]
    fn an_event_of_hidden_fields_only_has_no_changes() {
        let e = record_event(r#"[{"fieldId":"salary","newValue":90000}]"#);
        let m = event(&e, &mask());
        assert_eq!(m.event().unwrap().changes, Some(json!([])));
    }

    #[test]
    fn a_field_event_about_a_hidden_field_is_not_delivered() {
        let f = entry(&[
            ("type", b"update"),
            ("entityType", b"field"),
            ("entityId", b"salary"),
            ("userId", b"u1"),
        ]);
        let e = ChangeEvent::from_entry(id("1-0"), &f, Some("t")).unwrap();
        assert!(event(&e, &mask()).event().is_none());
        assert!(owned_event(e, Some(&mask())).is_none());
    }

    #[test]
    fn a_rejection_loses_hidden_current_values_and_conflicts() {
        let mut r: CommitResult = serde_json::from_value(json!({
            "status": "rejected", "version": 3,
            "current": {"version": 3, "fields": {"salary": 90000, "name": "a"}},
            "conflicts": [{"fieldId": "salary", "theirValue": 90000}, {"fieldId": "name", "theirValue": "a"}],
        }))
        .unwrap();
        commit_result(&mut r, Some(&mask()));
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            !text.contains("salary") && !text.contains("90000"),
            "{text}"
        );
        assert!(text.contains("name"));
    }

    #[test]
    fn cursors_on_hidden_fields_are_dropped_and_stripped_from_users() {
        let m = mask();
        let on = |f: &str| json!({"userId": "u", "cursor": {"recordId": "r", "fieldId": f}});
        assert!(notice(ServerEvent::CursorPosition, &on("salary"), &m).is_none());
        assert!(notice(ServerEvent::CursorPosition, &on("name"), &m).is_some());
        let sel = json!({"selection": {"startFieldId": "name", "endFieldId": "salary"}});
        assert!(notice(ServerEvent::Selection, &sel, &m).is_none());
        let mut user = json!({"userId": "u", "cursor": {"fieldId": "salary"}, "selection": {"startFieldId": "a", "endFieldId": "b"}});
        presence_user(&mut user, &m);
        assert!(user.get("cursor").is_none() && user.get("selection").is_some());
    }
}
