//! Before- and after-states of each record event, for the filters of the
//! live fan-out (docs/protocol.md 3.5, "Live fan-out under a filter").
//!
//! Data flow: the tailer reads the current state of every record a batch
//! touches (one `rtsync_load` per batch, only while a filtered cohort is
//! on the table) and hands it with the events to the hub, which calls
//! [`steps`]. Each stream entry carries, per changed field, the value
//! before (`oldValue`, taken by `rtsync_commit` from the stored state) and
//! after (`newValue`). Walking a record's events of the batch backwards
//! from its stored state, undoing each with its old values, gives the exact
//! state before and after every one of them, when the stored version is
//! the version of the batch's last event of that record (`exact`). When a
//! later commit already moved the record (the stored version is newer),
//! the after-state is the stored one and the step is not `exact`: the
//! fan-out then sends the record's state (enter) rather than the change.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::change::ChangeEvent;
use crate::store::records::RecordState;

/// A record's field values; `None` is no record (never created, or deleted).
pub type Fields = Option<Map<String, Value>>;

/// One record event's states as the filters see them.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub before: Fields,
    pub after: Fields,
    /// The after-state's version (the event's when `exact`).
    pub version: u64,
    /// Whether both states are exactly the record's around this event.
    pub exact: bool,
}

/// The step of each event (`None` for events that are not about a record).
pub fn steps(events: &[ChangeEvent], states: &HashMap<String, RecordState>) -> Vec<Option<Step>> {
    let mut out: Vec<Option<Step>> = vec![None; events.len()];
    let mut by_record: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if e.entity_type == "record" {
            by_record.entry(&e.entity_id).or_default().push(i);
        }
    }
    for (record, idx) in by_record {
        let Some(state) = states.get(record) else {
            for i in idx {
                out[i] = Some(from_event_only(&events[i]));
            }
            continue;
        };
        let stored: Fields = (!state.deleted).then(|| state.fields.clone());
        let last_version = idx.last().map_or(0, |&i| events[i].version);
        if state.version == last_version {
            let mut after = stored;
            for &i in idx.iter().rev() {
                let before = undo(after.clone(), &events[i]);
                out[i] = Some(Step {
                    before: before.clone(),
                    after,
                    version: events[i].version,
                    exact: true,
                });
                after = before;
            }
        } else {
            for &i in &idx {
                out[i] = Some(Step {
                    before: undo(stored.clone(), &events[i]),
                    after: stored.clone(),
                    version: state.version,
                    exact: false,
                });
            }
        }
    }
    out
}

/// A record without a stored state (a producer's own `XADD`, or a failed
/// read): what its event says, not exact. The fan-out sends no value of
/// such a record (`hub::filtered`): the event alone cannot judge a filter.
fn from_event_only(e: &ChangeEvent) -> Step {
    let after = match e.kind.as_str() {
        "delete" => None,
        _ => Some(values(e, "newValue")),
    };
    Step {
        before: undo(Some(Map::new()), e),
        after,
        version: e.version,
        exact: false,
    }
}

/// The state before `e`, from the state after it.
pub fn undo(after: Fields, e: &ChangeEvent) -> Fields {
    match e.kind.as_str() {
        "create" => None,
        "delete" => Some(values(e, "oldValue")),
        _ => {
            let mut state = after.unwrap_or_default();
            for (field, old) in changes(e, "oldValue") {
                match old {
                    Some(v) if !v.is_null() => state.insert(field.to_owned(), v.clone()),
                    _ => state.remove(field),
                };
            }
            Some(state)
        }
    }
}

/// The non-null `side` values of `e`'s field changes.
fn values(e: &ChangeEvent, side: &str) -> Map<String, Value> {
    changes(e, side)
        .filter_map(|(f, v)| Some((f.to_owned(), v.filter(|v| !v.is_null())?.clone())))
        .collect()
}

/// Whether `e`'s entry left its old values out (`oldValueOmitted`: the
/// change was too large for them), so undoing it cannot give the state
/// before it.
pub fn omits_old_values(e: &ChangeEvent) -> bool {
    match &e.changes {
        Some(Value::Array(items)) => items
            .iter()
            .any(|c| c.get("oldValueOmitted") == Some(&Value::Bool(true))),
        _ => false,
    }
}

/// `e`'s field changes as (field, value of `side`).
fn changes<'a>(
    e: &'a ChangeEvent,
    side: &'a str,
) -> impl Iterator<Item = (&'a str, Option<&'a Value>)> + 'a {
    let items = match &e.changes {
        Some(Value::Array(items)) => items.as_slice(),
        _ => &[],
    };
    items
        .iter()
        .filter_map(move |c| Some((c.get("fieldId")?.as_str()?, c.get(side))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::StreamId;
    use serde_json::json;

    fn event(id: &str, kind: &str, version: u64, changes: Value) -> ChangeEvent {
        let fields = vec![
            ("type".to_owned(), kind.as_bytes().to_vec()),
            ("entityType".to_owned(), b"record".to_vec()),
            ("entityId".to_owned(), b"r".to_vec()),
            ("userId".to_owned(), b"u".to_vec()),
            ("version".to_owned(), version.to_string().into_bytes()),
            ("changes".to_owned(), changes.to_string().into_bytes()),
        ];
        let id = StreamId::parse(id).expect("an id");
        ChangeEvent::from_entry(id, &fields, Some("t")).expect("an entry")
    }

    fn state(version: u64, fields: Value) -> HashMap<String, RecordState> {
        let state = RecordState {
            record_id: "r".into(),
            version,
            deleted: false,
            fields: fields.as_object().cloned().unwrap_or_default(),
        };
        HashMap::from([("r".to_owned(), state)])
    }

    fn obj(v: Value) -> Fields {
        v.as_object().cloned()
    }

    #[test]
    fn a_batch_ending_at_the_stored_version_gives_exact_states_for_every_event() {
        let events = [
            event(
                "1-0",
                "update",
                2,
                json!([{"fieldId": "owner", "oldValue": "ann", "newValue": "bob"}]),
            ),
            event(
                "2-0",
                "update",
                3,
                json!([{"fieldId": "note", "oldValue": "a", "newValue": "b"}]),
            ),
        ];
        let steps = steps(&events, &state(3, json!({"owner": "bob", "note": "b"})));
        let first = steps[0].clone().expect("a step");
        assert!(first.exact);
        assert_eq!(first.before, obj(json!({"owner": "ann", "note": "a"})));
        assert_eq!(first.after, obj(json!({"owner": "bob", "note": "a"})));
        let second = steps[1].clone().expect("a step");
        assert_eq!(second.before, first.after);
    }

    #[test]
    fn a_record_moved_again_since_the_batch_is_judged_on_its_stored_state_not_exactly() {
        let events = [event(
            "1-0",
            "update",
            2,
            json!([{"fieldId": "owner", "oldValue": "ann", "newValue": "bob"}]),
        )];
        let step = steps(&events, &state(5, json!({"owner": "cy"})))[0]
            .clone()
            .expect("a step");
        assert!(!step.exact);
        assert_eq!(step.after, obj(json!({"owner": "cy"})));
        assert_eq!(step.before, obj(json!({"owner": "ann"})));
        assert_eq!(step.version, 5);
    }

    #[test]
    fn a_create_starts_from_no_record_and_a_delete_ends_in_none() {
        let events = [
            event(
                "1-0",
                "create",
                1,
                json!([{"fieldId": "owner", "newValue": "ann"}]),
            ),
            event(
                "2-0",
                "delete",
                2,
                json!([{"fieldId": "owner", "oldValue": "ann"}]),
            ),
        ];
        let mut states = state(2, json!({}));
        if let Some(s) = states.get_mut("r") {
            s.deleted = true;
        }
        let steps = steps(&events, &states);
        let create = steps[0].clone().expect("a step");
        assert_eq!(
            (create.before, create.after.clone()),
            (None, obj(json!({"owner": "ann"})))
        );
        let delete = steps[1].clone().expect("a step");
        assert_eq!((delete.before, delete.after), (create.after, None));
    }
}
