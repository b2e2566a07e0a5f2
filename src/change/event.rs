//! A change as it leaves: one entry of a table's (or a base's) stream as
//! clients see it (docs/protocol.md sections 4 and 7), decoded from the
//! entry's fields once per sidecar, with its [`StreamId`]. It is encoded at
//! most once per wire encoding (`protocol::event`), and every subscriber
//! shares those bytes.

use std::sync::OnceLock;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::ids::{base_of_stream, is_valid_id};
use super::rules::{check_type, is_field_change_list, ENTITY_TYPES};
use super::value::json_or_msgpack;
use super::{StreamId, ValidChange};

/// A change event, ready to be framed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeEvent {
    /// Its stream entry id; `timestamp` is its time part.
    pub id: StreamId,
    /// `create`, `update`, `delete` for records; a short word for others.
    #[serde(rename = "type")]
    pub kind: String,
    /// `record`, `field`, `table`, `view` or `base`.
    pub entity_type: String,
    /// The record (or other entity) changed.
    pub entity_id: String,
    /// The table whose stream holds it (none for a base's stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_id: Option<String>,
    /// The base, when the writer named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_id: Option<String>,
    /// Who made the change.
    pub user_id: String,
    /// Unix milliseconds, from the id.
    pub timestamp: u64,
    /// The field changes, as the writer gave them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Value>,
    /// The writer's metadata object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The entity's version after the change.
    pub version: u64,
    /// Only in the answer to `sync_offline_changes`, which names each
    /// change by it; live events leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
    /// The connection that made the change; never sent to clients.
    #[serde(skip)]
    pub origin: Option<String>,
    /// Its bytes in each wire encoding, made on first use
    /// (`protocol::event`).
    #[serde(skip)]
    pub(crate) encoded: [OnceLock<Bytes>; 2],
}

/// A stream entry's fields, read by name.
struct EntryFields<'a>(&'a [(String, Vec<u8>)]);

impl EntryFields<'_> {
    fn get(&self, name: &str) -> Option<&Vec<u8>> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    fn text(&self, name: &'static str) -> Result<Option<String>, EntryError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => String::from_utf8(v.clone())
                .map(Some)
                .map_err(|_| EntryError::NotUtf8(name)),
        }
    }

    fn required(&self, name: &'static str) -> Result<String, EntryError> {
        self.text(name)?.ok_or(EntryError::Missing(name))
    }

    /// A JSON or MessagePack field that `valid` accepts, if present.
    fn value(
        &self,
        name: &'static str,
        valid: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>, EntryError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        match json_or_msgpack(raw) {
            Some(v) if valid(&v) => Ok(Some(v)),
            _ => Err(EntryError::Invalid(name)),
        }
    }
}

/// Why a stream entry was skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A text field holds bytes that are not UTF-8.
    #[error("field {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A field breaks a rule of a change.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

impl ChangeEvent {
    /// Decodes an entry of the stream named `stream` (a table id, or a
    /// base's `{B}`, see [`super::ids::base_stream_name`]): a table's events
    /// carry its `tableId`; a base's carry its `baseId` and no `tableId`.
    pub fn from_stream_entry(
        id: StreamId,
        fields: &[(String, Vec<u8>)],
        stream: &str,
    ) -> Result<ChangeEvent, EntryError> {
        match base_of_stream(stream) {
            Some(base) => {
                let mut e = ChangeEvent::from_entry(id, fields, None)?;
                e.base_id.get_or_insert_with(|| base.to_owned());
                Ok(e)
            }
            None => ChangeEvent::from_entry(id, fields, Some(stream)),
        }
    }

    /// Decodes a stream entry. `table_id` is the table whose stream it came
    /// from (`None` for base streams).
    pub fn from_entry(
        id: StreamId,
        fields: &[(String, Vec<u8>)],
        table_id: Option<&str>,
    ) -> Result<ChangeEvent, EntryError> {
        let f = EntryFields(fields);
        let text = |name| f.text(name);
        let required = |name| f.required(name);

        let kind = required("type")?;
        let entity_type = required("entityType")?;
        if !ENTITY_TYPES.contains(&entity_type.as_str()) {
            return Err(EntryError::Invalid("entityType"));
        }
        check_type(&entity_type, &kind).map_err(|_| EntryError::Invalid("type"))?;
        let entity_id = required("entityId")?;
        let user_id = required("userId")?;
        if !is_valid_id(&entity_id) {
            return Err(EntryError::Invalid("entityId"));
        }
        if !is_valid_id(&user_id) {
            return Err(EntryError::Invalid("userId"));
        }
        let base_id = text("baseId")?.filter(|s| !s.is_empty());
        let version = match text("version")? {
            None => 0,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| EntryError::Invalid("version"))?,
        };
        let changes = f.value("changes", is_field_change_list)?;
        let metadata = f.value("metadata", Value::is_object)?;
        let origin = text("origin")?.filter(|s| !s.is_empty());
        Ok(ChangeEvent {
            id,
            kind,
            entity_type,
            entity_id,
            table_id: table_id.map(str::to_owned),
            base_id,
            user_id,
            timestamp: id.ms,
            changes,
            metadata,
            version,
            client_change_id: None,
            origin,
            encoded: Default::default(),
        })
    }

    /// The event a committed change became, as its subscribers were sent
    /// it, for an answer that repeats it (`offline_changes`): with its
    /// `clientChangeId`.
    pub fn committed(change: &ValidChange, id: StreamId, version: u64) -> ChangeEvent {
        let req = &change.req;
        ChangeEvent {
            id,
            kind: req.kind.clone(),
            entity_type: req.entity_type.clone(),
            entity_id: req.entity_id.clone(),
            table_id: req.table_id.clone(),
            base_id: req.base_id.clone(),
            user_id: req.user_id.clone(),
            timestamp: id.ms,
            changes: change.changes(),
            metadata: change.metadata(),
            version,
            client_change_id: req.client_change_id.clone(),
            origin: req.origin.clone(),
            encoded: Default::default(),
        }
    }
}

impl ChangeEvent {
    /// A copy with other `changes` (a masked view of the event), with
    /// encodings of its own.
    pub fn with_changes(&self, changes: Option<Value>) -> ChangeEvent {
        ChangeEvent {
            id: self.id,
            kind: self.kind.clone(),
            entity_type: self.entity_type.clone(),
            entity_id: self.entity_id.clone(),
            table_id: self.table_id.clone(),
            base_id: self.base_id.clone(),
            user_id: self.user_id.clone(),
            timestamp: self.timestamp,
            changes,
            metadata: self.metadata.clone(),
            version: self.version,
            client_change_id: self.client_change_id.clone(),
            origin: self.origin.clone(),
            encoded: Default::default(),
        }
    }

    /// Drops the cached encodings, after the event was changed in place.
    pub fn forget_encodings(&mut self) {
        self.encoded = Default::default();
    }
}

/// Stream entries for tests, here and in the modules that frame events.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::StreamId;

    pub fn id(s: &str) -> StreamId {
        StreamId::parse(s).unwrap()
    }

    pub fn entry(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{entry, id};
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_json_changes() {
        let f = entry(&[
            ("type", b"update"),
            ("entityType", b"record"),
            ("entityId", b"r1"),
            ("userId", b"u1"),
            ("version", b"3"),
            ("changes", br#"[{"fieldId":"f1","newValue":5}]"#),
        ]);
        let e = ChangeEvent::from_entry(id("1700000000000-1"), &f, Some("t1")).unwrap();
        assert_eq!(e.timestamp, 1_700_000_000_000);
        assert_eq!(e.version, 3);
        assert_eq!(e.changes, Some(json!([{"fieldId": "f1", "newValue": 5}])));
    }

    #[test]
    fn decodes_msgpack_changes() {
        let changes =
            rmp_serde::to_vec_named(&json!([{"fieldId": "f1", "newValue": "x"}])).unwrap();
        let f = entry(&[
            ("type", b"create"),
            ("entityType", b"record"),
            ("entityId", b"r1"),
            ("userId", b"u1"),
            ("changes", &changes),
        ]);
        let e = ChangeEvent::from_entry(id("1-0"), &f, Some("t1")).unwrap();
        assert_eq!(e.changes.unwrap()[0]["newValue"], "x");
    }

    #[test]
    fn rejects_entries_missing_required_fields_or_with_bad_changes() {
        let f = entry(&[("type", b"update"), ("entityType", b"record")]);
        assert_eq!(
            ChangeEvent::from_entry(id("1-0"), &f, None).unwrap_err(),
            EntryError::Missing("entityId")
        );
        let f = entry(&[
            ("type", b"update"),
            ("entityType", b"record"),
            ("entityId", b"r"),
            ("userId", b"u"),
            ("changes", b"[1,2"),
        ]);
        assert!(ChangeEvent::from_entry(id("1-0"), &f, None).is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_entries_never_panic(
            fields in proptest::collection::vec(
                (proptest::sample::select(vec!["type", "entityType", "entityId", "userId", "version", "changes", "metadata", "baseId", "origin"]),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)),
                0..10),
            id in "[0-9]{0,14}-?[0-9]{0,3}",
        ) {
            let fields: Vec<(String, Vec<u8>)> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let _ = ChangeEvent::from_entry(StreamId::parse_or_zero(&id), &fields, Some("t"));
        }
    }
}
