//! The rules a change obeys besides its ids (docs/protocol.md section 7):
//! the entity types, the types of a record change, the version bound and
//! the `clientChangeId` length. The function `rtsync_commit`
//! (`lua/commit.lua`) checks the same rules, because other services call it
//! directly; `tests/change_rules.rs` runs both on one table of inputs.

use serde_json::Value;

use super::ids::is_valid_id;
use super::ChangeError;

/// What a change may be about.
pub const ENTITY_TYPES: [&str; 5] = ["record", "field", "table", "view", "base"];

/// The types of a record change; other entities take any short word.
pub const RECORD_TYPES: [&str; 3] = ["create", "update", "delete"];

/// Longest `type` of a change of another entity than a record.
pub const MAX_TYPE_BYTES: usize = 32;

/// Longest `clientChangeId`.
pub const MAX_CLIENT_CHANGE_ID_BYTES: usize = 128;

/// The largest version a record (or a change's base) may have: versions
/// travel through Lua as doubles, exact up to 2^53, and the next commit's
/// version must be exact too.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// `entityType` is one of [`ENTITY_TYPES`], and `type` fits it.
pub fn check_type(entity_type: &str, kind: &str) -> Result<(), ChangeError> {
    if !ENTITY_TYPES.contains(&entity_type) {
        return Err(ChangeError::Invalid(
            "entityType must be record, field, table, view or base".to_owned(),
        ));
    }
    if entity_type == "record" {
        if !RECORD_TYPES.contains(&kind) {
            return Err(ChangeError::Invalid(
                "type must be create, update or delete".to_owned(),
            ));
        }
    } else if kind.is_empty() || kind.len() > MAX_TYPE_BYTES {
        return Err(ChangeError::Invalid(format!(
            "type must be 1..={MAX_TYPE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A version a change may be based on (or a record may hold).
pub fn check_version(version: u64) -> Result<(), ChangeError> {
    if version > MAX_VERSION {
        return Err(ChangeError::Invalid(format!(
            "version must be an integer in 0..={MAX_VERSION}"
        )));
    }
    Ok(())
}

/// A `clientChangeId` of 1..=128 bytes.
pub fn check_client_change_id(cc: &str) -> Result<(), ChangeError> {
    if cc.is_empty() || cc.len() > MAX_CLIENT_CHANGE_ID_BYTES {
        return Err(ChangeError::Invalid(format!(
            "clientChangeId must be 1..={MAX_CLIENT_CHANGE_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// `metadata` is absent or an object.
pub fn check_metadata(metadata: Option<&Value>) -> Result<(), ChangeError> {
    match metadata {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ChangeError::Invalid(
            "metadata must be an object".to_owned(),
        )),
    }
}

/// A `changes` list as stored: an array of objects with a valid `fieldId`.
pub fn is_field_change_list(v: &Value) -> bool {
    v.as_array().is_some_and(|items| {
        items.iter().all(|c| {
            c.get("fieldId")
                .and_then(Value::as_str)
                .is_some_and(is_valid_id)
        })
    })
}
