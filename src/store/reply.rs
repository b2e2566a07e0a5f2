//! Reading the map-shaped replies of `XINFO`, whichever RESP version the
//! connection speaks.

use crate::change::StreamId;

/// A map-shaped reply such as `XINFO STREAM` or one `XINFO GROUPS` entry
/// (a flat list in RESP2, a map in RESP3).
pub struct InfoMap(pub redis::Value);

impl InfoMap {
    fn get(&self, name: &str) -> Option<&redis::Value> {
        let key_is = |k: &redis::Value| match k {
            redis::Value::BulkString(b) => b == name.as_bytes(),
            redis::Value::SimpleString(s) => s == name,
            _ => false,
        };
        match &self.0 {
            redis::Value::Map(kv) => kv.iter().find(|(k, _)| key_is(k)).map(|(_, v)| v),
            redis::Value::Array(flat) => flat
                .chunks(2)
                .find(|c| c.first().is_some_and(key_is))
                .and_then(|c| c.get(1)),
            _ => None,
        }
    }

    pub fn text(&self, name: &str) -> Option<String> {
        match self.get(name)? {
            redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            redis::Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A field holding a stream id (`last-generated-id`, ...).
    pub fn id(&self, name: &str) -> Option<StreamId> {
        StreamId::parse(&self.text(name)?)
    }

    /// The id of `first-entry` (`XINFO STREAM`).
    pub fn first_entry_id(&self) -> Option<StreamId> {
        match self.get("first-entry")? {
            redis::Value::Array(e) => match e.first()? {
                redis::Value::BulkString(b) => StreamId::parse(std::str::from_utf8(b).ok()?),
                _ => None,
            },
            _ => None,
        }
    }
}
