//! One field's change, typed: what a validated change holds, what
//! `calculate_delta` produces and what grants are checked against.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ChangeError;
use crate::change::ids::check_id;

/// One field's change, as in a `record_change`'s `changes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// The field.
    pub field_id: String,
    /// Its value before, as the writer saw it (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_value: Option<Value>,
    /// `None` (or JSON `null`) removes the field's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_value: Option<Value>,
}

impl FieldChange {
    /// The typed list of a change's `changes` (absent or `null`: none), at
    /// most `max` of them. Takes the values without copying them.
    pub fn list(changes: Option<Value>, max: usize) -> Result<Vec<FieldChange>, ChangeError> {
        let items = match changes {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(ChangeError::Invalid("changes must be an array".to_owned())),
        };
        if items.len() > max {
            return Err(ChangeError::TooLarge(format!(
                "at most {max} field changes per change"
            )));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, c)| FieldChange::from_value(i, c))
            .collect()
    }

    fn from_value(i: usize, c: Value) -> Result<FieldChange, ChangeError> {
        let Value::Object(mut obj) = c else {
            return Err(ChangeError::Invalid(format!(
                "changes[{i}] must be an object {{fieldId, oldValue?, newValue?}}"
            )));
        };
        let field_id = match obj.remove("fieldId") {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        check_id(&format!("changes[{i}].fieldId"), &field_id)?;
        let present = |v: Option<Value>| v.filter(|v| !v.is_null());
        Ok(FieldChange {
            field_id,
            old_value: present(obj.remove("oldValue")),
            new_value: present(obj.remove("newValue")),
        })
    }
}
