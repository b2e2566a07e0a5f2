//! ChangeEvent: one entry of a table stream as clients see it, decoded from
//! the stream entry's fields (docs/protocol.md section 7) once per sidecar, and
//! encoded at most once per wire encoding. Frames carrying events
//! (`record_change`, `batch_changes`, `missed_events`, ...) are assembled by
//! concatenating those cached bytes, so a batch with the origin's own events
//! filtered out costs no re-encoding, and every subscriber shares the bytes.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::Value;

use super::{ids::is_valid_id, Encoding};

/// A change event, ready to be framed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub entity_type: String,
    pub entity_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_id: Option<String>,
    pub user_id: String,
    pub timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    pub version: u64,
    /// The connection that made the change; never sent to clients.
    #[serde(skip)]
    pub origin: Option<String>,
    #[serde(skip)]
    encoded: [OnceLock<Bytes>; 2],
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
        match decode_json_or_msgpack(raw) {
            Some(v) if valid(&v) => Ok(Some(v)),
            _ => Err(EntryError::Invalid(name)),
        }
    }
}

/// Why a stream entry was skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("invalid stream entry id {0:?}")]
    BadId(String),
}

const ENTITY_TYPES: [&str; 5] = ["record", "field", "table", "view", "base"];
const MAX_KIND: usize = 32;

impl ChangeEvent {
    /// Decodes an entry of the stream named `stream` (a table id, or a
    /// base's `{B}`, see [`super::ids::base_stream_name`]): a table's events
    /// carry its `tableId`; a base's carry its `baseId` and no `tableId`.
    pub fn from_stream_entry(
        id: &str,
        fields: &[(String, Vec<u8>)],
        stream: &str,
    ) -> Result<ChangeEvent, EntryError> {
        match super::ids::base_of_stream(stream) {
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
        id: &str,
        fields: &[(String, Vec<u8>)],
        table_id: Option<&str>,
    ) -> Result<ChangeEvent, EntryError> {
        let timestamp = super::StreamId::parse(id)
            .map(|i| i.ms)
            .ok_or_else(|| EntryError::BadId(id.to_owned()))?;
        let f = EntryFields(fields);
        let text = |name| f.text(name);
        let required = |name| f.required(name);

        let kind = required("type")?;
        if kind.is_empty() || kind.len() > MAX_KIND {
            return Err(EntryError::Invalid("type"));
        }
        let entity_type = required("entityType")?;
        if !ENTITY_TYPES.contains(&entity_type.as_str()) {
            return Err(EntryError::Invalid("entityType"));
        }
        if entity_type == "record" && !matches!(kind.as_str(), "create" | "update" | "delete") {
            return Err(EntryError::Invalid("type"));
        }
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
            id: id.to_owned(),
            kind,
            entity_type,
            entity_id,
            table_id: table_id.map(str::to_owned),
            base_id,
            user_id,
            timestamp,
            changes,
            metadata,
            version,
            origin,
            encoded: Default::default(),
        })
    }

    /// The event's own bytes in `encoding`, encoded on first use.
    pub fn encoded(&self, encoding: Encoding) -> &Bytes {
        self.encoded[encoding.index()].get_or_init(|| {
            let bytes = match encoding {
                Encoding::MsgPack => rmp_serde::to_vec_named(self).map_err(|e| e.to_string()),
                Encoding::Json => serde_json::to_vec(self).map_err(|e| e.to_string()),
            };
            // Values came from JSON or MessagePack and re-encode; on the
            // impossible failure send `null` rather than panicking.
            Bytes::from(bytes.unwrap_or_else(|e| {
                tracing::error!(error = %e, id = %self.id, "failed to encode a change event");
                match encoding {
                    Encoding::MsgPack => vec![0xc0],
                    Encoding::Json => b"null".to_vec(),
                }
            }))
        })
    }
}

/// Most bytes (MessagePack) of events in one frame of several events.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Most events in one frame.
const MAX_BATCH_EVENTS: usize = 256;

/// Splits events into consecutive groups that each make a bounded frame
/// (`batch_changes`, `missed_events`): at most 256 events and 256 KiB of
/// encoded events, or one event however large.
pub fn bounded_groups(events: &[ChangeEvent]) -> Vec<&[ChangeEvent]> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let size = e.encoded(Encoding::MsgPack).len();
        if i > start && (bytes + size > MAX_BATCH_BYTES || i - start >= MAX_BATCH_EVENTS) {
            groups.push(&events[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < events.len() {
        groups.push(&events[start..]);
    }
    groups
}

/// `[name, event]`: a `record_change` frame.
pub fn single_frame(name: &str, event: &ChangeEvent, encoding: Encoding) -> Bytes {
    let body = event.encoded(encoding);
    let mut out = BytesMut::with_capacity(body.len() + name.len() + 8);
    match encoding {
        Encoding::MsgPack => {
            out.put_u8(0x92);
            write_msgpack_str(&mut out, name);
            out.extend_from_slice(body);
        }
        Encoding::Json => {
            out.put_u8(b'[');
            write_json_str(&mut out, name);
            out.put_u8(b',');
            out.extend_from_slice(body);
            out.put_u8(b']');
        }
    }
    out.freeze()
}

/// `[name, [event, ...]]`: `batch_changes`, `recent_changes`, `missed_events`.
pub fn list_frame<'a, I>(name: &str, events: I, encoding: Encoding) -> Bytes
where
    I: IntoIterator<Item = &'a ChangeEvent>,
    I::IntoIter: ExactSizeIterator,
{
    let events = events.into_iter();
    let count = events.len();
    let mut out = BytesMut::with_capacity(64 + count * 256);
    match encoding {
        Encoding::MsgPack => {
            out.put_u8(0x92);
            write_msgpack_str(&mut out, name);
            let mut w = (&mut out).writer();
            // Writing into a BytesMut cannot fail.
            let _ = rmp::encode::write_array_len(&mut w, count as u32);
            for e in events {
                out.extend_from_slice(e.encoded(encoding));
            }
        }
        Encoding::Json => {
            out.put_u8(b'[');
            write_json_str(&mut out, name);
            out.extend_from_slice(b",[");
            for (i, e) in events.enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                out.extend_from_slice(e.encoded(encoding));
            }
            out.extend_from_slice(b"]]");
        }
    }
    out.freeze()
}

fn write_msgpack_str(out: &mut BytesMut, s: &str) {
    let mut w = out.writer();
    let _ = rmp::encode::write_str(&mut w, s);
}

fn write_json_str(out: &mut BytesMut, s: &str) {
    let _ = serde_json::to_writer(out.writer(), s);
}

/// Stream fields `changes`/`metadata` may be JSON text or MessagePack.
fn decode_json_or_msgpack(raw: &[u8]) -> Option<Value> {
    let first = raw.iter().find(|b| !b.is_ascii_whitespace())?;
    if matches!(first, b'[' | b'{') {
        serde_json::from_slice(raw).ok()
    } else {
        super::codec::msgpack_value(raw).ok()
    }
}

fn is_field_change_list(v: &Value) -> bool {
    v.as_array().is_some_and(|items| {
        items.iter().all(|c| {
            c.get("fieldId")
                .and_then(Value::as_str)
                .is_some_and(is_valid_id)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

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
        let e = ChangeEvent::from_entry("1700000000000-1", &f, Some("t1")).unwrap();
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
        let e = ChangeEvent::from_entry("1-0", &f, Some("t1")).unwrap();
        assert_eq!(e.changes.unwrap()[0]["newValue"], "x");
    }

    #[test]
    fn rejects_entries_missing_required_fields_or_with_bad_changes() {
        let f = entry(&[("type", b"update"), ("entityType", b"record")]);
        assert_eq!(
            ChangeEvent::from_entry("1-0", &f, None).unwrap_err(),
            EntryError::Missing("entityId")
        );
        let f = entry(&[
            ("type", b"update"),
            ("entityType", b"record"),
            ("entityId", b"r"),
            ("userId", b"u"),
            ("changes", b"[1,2"),
        ]);
        assert!(ChangeEvent::from_entry("1-0", &f, None).is_err());
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
            let _ = ChangeEvent::from_entry(&id, &fields, Some("t"));
        }
    }

    #[test]
    fn list_frame_concatenates_cached_event_bytes() {
        let f = entry(&[
            ("type", b"delete"),
            ("entityType", b"record"),
            ("entityId", b"r1"),
            ("userId", b"u1"),
        ]);
        let a = ChangeEvent::from_entry("1-0", &f, Some("t")).unwrap();
        let b = ChangeEvent::from_entry("2-0", &f, Some("t")).unwrap();
        let json_frame = list_frame("batch_changes", [&a, &b], Encoding::Json);
        let v: Value = serde_json::from_slice(&json_frame).unwrap();
        assert_eq!(v[0], "batch_changes");
        assert_eq!(v[1][1]["id"], "2-0");
        let mp = list_frame("batch_changes", [&a, &b], Encoding::MsgPack);
        let v: Value = rmp_serde::from_slice(&mp).unwrap();
        assert_eq!(v[1][0]["entityId"], "r1");
        let single = single_frame("record_change", &a, Encoding::MsgPack);
        let v: Value = rmp_serde::from_slice(&single).unwrap();
        assert_eq!(v[1]["type"], "delete");
    }
}
