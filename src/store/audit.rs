//! The audit stream in Redis (docs/protocol.md 12): appends through
//! `rtsync_audit` (`lua/audit.lua`, which chains the hashes atomically),
//! and plain reads of the stream and of the chain's head for the API and
//! `rtsync audit verify`.
//!
//! Data flow: `audit::writer` → [`append`] → Redis; `http::audit` and
//! `audit::verify` → [`range`] / [`head`] → entries as stored, fields in
//! stream order (the order the hash covers).

use redis::Value;

use super::{Store, StoreError};

/// Most records one `rtsync_audit` call takes (the function's own bound).
pub const MAX_RECORDS_PER_CALL: usize = 64;

/// One stored entry: its id and its field/value pairs in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub id: String,
    pub fields: Vec<(String, String)>,
}

impl StoredEntry {
    /// The value of `name`, if the entry has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Appends `records` (JSON objects of strings, see `lua/audit.lua`) to the
/// chain, trimming entries older than `retention_ms`; the new ids.
pub async fn append(
    store: &Store,
    retention_ms: u64,
    records: &[String],
) -> Result<Vec<String>, StoreError> {
    let keys = store.keys.audit_keys();
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("rtsync_audit")
        .arg(keys.len())
        .arg(&keys[..])
        .arg(retention_ms.max(1));
    for r in records {
        cmd.arg(r);
    }
    store.fcall_aside(&cmd).await
}

/// Up to `count` entries from `start` to `end` (XRANGE bounds: `-`, `+`,
/// an id, or `(id` for exclusive), oldest first, or newest first (from
/// `end` down to `start`) when `reverse`.
pub async fn range(
    store: &Store,
    start: &str,
    end: &str,
    count: usize,
    reverse: bool,
) -> Result<Vec<StoredEntry>, StoreError> {
    let (cmd, from, to) = if reverse {
        ("XREVRANGE", end, start)
    } else {
        ("XRANGE", start, end)
    };
    let mut conn = store.conn();
    let reply: Value = redis::cmd(cmd)
        .arg(store.keys.audit())
        .arg(from)
        .arg(to)
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(parse_entries(reply))
}

/// The chain head: the hash of the last entry written, if any.
pub async fn head(store: &Store) -> Result<Option<String>, StoreError> {
    let mut conn = store.conn();
    redis::cmd("GET")
        .arg(store.keys.audit_head())
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)
}

/// XRANGE's reply as entries; a malformed item keeps what parses (an
/// entry with an odd field list keeps an empty last value, which no hash
/// matches, so `verify` reports it).
fn parse_entries(reply: Value) -> Vec<StoredEntry> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items.into_iter().filter_map(parse_entry).collect()
}

fn parse_entry(item: Value) -> Option<StoredEntry> {
    let Value::Array(mut parts) = item else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let id = text(parts.pop()?)?;
    let Value::Array(flat) = fields else {
        return None;
    };
    let mut values = flat.into_iter().map(|v| text(v).unwrap_or_default());
    let mut fields = Vec::new();
    while let Some(name) = values.next() {
        fields.push((name, values.next().unwrap_or_default()));
    }
    Some(StoredEntry { id, fields })
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn an_xrange_reply_keeps_each_entrys_fields_in_stream_order() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("prev"), bulk(""), bulk("ts"), bulk("5")]),
        ])]);
        let entries = parse_entries(reply);
        assert_eq!(
            entries,
            [StoredEntry {
                id: "1-0".into(),
                fields: vec![("prev".into(), String::new()), ("ts".into(), "5".into())],
            }]
        );
        assert_eq!(entries[0].get("ts"), Some("5"));
    }
}
