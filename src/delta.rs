//! `calculate_delta`: the field changes that turn one version of a record
//! into another, for producers that hold whole records (an ORM hook, an
//! import job) rather than edits. Equal values produce nothing; added fields
//! have no `oldValue`, removed fields no `newValue`.

use serde_json::{Map, Value};

pub use crate::change::FieldChange;

/// Field changes from `old` to `new`, ordered by field id.
pub fn calculate_delta(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<FieldChange> {
    let mut changes: Vec<FieldChange> = Vec::new();
    for (field, new_value) in new {
        match old.get(field) {
            Some(old_value) if old_value == new_value => {}
            old_value => changes.push(FieldChange {
                field_id: field.clone(),
                old_value: old_value.cloned(),
                new_value: Some(new_value.clone()),
            }),
        }
    }
    for (field, old_value) in old {
        if !new.contains_key(field) {
            changes.push(FieldChange {
                field_id: field.clone(),
                old_value: Some(old_value.clone()),
                new_value: None,
            });
        }
    }
    changes.sort_by(|a, b| a.field_id.cmp(&b.field_id));
    changes
}

/// Applies field changes to a record: the inverse of [`calculate_delta`].
pub fn apply_delta(record: &mut Map<String, Value>, changes: &[FieldChange]) {
    for c in changes {
        match &c.new_value {
            Some(v) => {
                record.insert(c.field_id.clone(), v.clone());
            }
            None => {
                record.remove(&c.field_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn added_changed_and_removed_fields() {
        let old = map(json!({"a": 1, "b": "x", "c": true}));
        let new = map(json!({"a": 1, "b": "y", "d": null}));
        let d = calculate_delta(&old, &new);
        assert_eq!(
            d,
            vec![
                FieldChange {
                    field_id: "b".into(),
                    old_value: Some(json!("x")),
                    new_value: Some(json!("y"))
                },
                FieldChange {
                    field_id: "c".into(),
                    old_value: Some(json!(true)),
                    new_value: None
                },
                FieldChange {
                    field_id: "d".into(),
                    old_value: None,
                    new_value: Some(json!(null))
                },
            ]
        );
    }

    #[test]
    fn serializes_as_the_wire_field_change() {
        let c = FieldChange {
            field_id: "f".into(),
            old_value: None,
            new_value: Some(json!(2)),
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"fieldId": "f", "newValue": 2})
        );
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn record() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map("f[0-9]{1,2}", value(), 0..8)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn applying_the_delta_to_old_gives_new(old in record(), new in record()) {
            let mut rebuilt = old.clone();
            apply_delta(&mut rebuilt, &calculate_delta(&old, &new));
            prop_assert_eq!(rebuilt, new);
        }

        #[test]
        fn equal_records_produce_no_changes(r in record()) {
            prop_assert!(calculate_delta(&r, &r).is_empty());
        }

        #[test]
        fn every_change_is_real_and_fields_appear_once(old in record(), new in record()) {
            let d = calculate_delta(&old, &new);
            let mut seen = std::collections::HashSet::new();
            for c in &d {
                prop_assert!(seen.insert(c.field_id.clone()));
                prop_assert_ne!(old.get(&c.field_id), new.get(&c.field_id));
                prop_assert_eq!(c.old_value.as_ref(), old.get(&c.field_id));
                prop_assert_eq!(c.new_value.as_ref(), new.get(&c.field_id));
            }
            let differing = old.keys().chain(new.keys())
                .filter(|k| old.get(*k) != new.get(*k))
                .collect::<std::collections::HashSet<_>>();
            prop_assert_eq!(differing.len(), d.len());
        }

        #[test]
        fn reversed_delta_undoes_it(old in record(), new in record()) {
            let mut back = new.clone();
            apply_delta(&mut back, &calculate_delta(&new, &old));
            prop_assert_eq!(back, old);
        }
    }
}
