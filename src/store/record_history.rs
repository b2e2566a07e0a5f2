//! Reads of one record's history (docs/protocol.md 3.3): the stream entries
//! its history index lists (kept by `rtsync_commit`), newest first, read by
//! `rtsync_record_history` (`lua/record_history.lua`) in one call, bounded
//! in count and bytes. The cost follows the record's own changes: the
//! function reads the index and one entry per id, never the table's stream.
//!
//! Data flow: `session::record_history` (masking, the page's byte bound)
//! → [`read`] → `FCALL rtsync_record_history` → entries and the next id.

use redis::Value;

use super::tailer::{entries, text, Entry};
use super::{Store, StoreError};
use crate::protocol::StreamId;

/// One read of a record's history: its entries, newest first, and where
/// the next read starts when the index holds older ids.
#[derive(Debug, Default)]
pub struct HistoryChunk {
    pub entries: Vec<Entry>,
    /// The `before` of the next read (the last entry's id), if any.
    pub next: Option<StreamId>,
}

/// The record's changes older than `before` (all when `None`), newest
/// first: at most `count` entries and `max_bytes` of entry data (but
/// always one).
pub async fn read(
    store: &Store,
    table: &str,
    record: &str,
    before: Option<StreamId>,
    count: usize,
    max_bytes: usize,
) -> Result<HistoryChunk, StoreError> {
    let keys = store.keys.record_history_keys(table, record);
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("rtsync_record_history")
        .arg(keys.len())
        .arg(&keys[..])
        .arg(before.map(|b| b.to_string()).unwrap_or_default())
        .arg(count.max(1))
        .arg(max_bytes.max(1));
    let reply: Value = store.fcall_read(&cmd).await?;
    Ok(chunk(reply))
}

/// `[entries, next]` as the function answers it; anything else is an
/// empty chunk (never a panic).
fn chunk(reply: Value) -> HistoryChunk {
    let Value::Array(mut parts) = reply else {
        return HistoryChunk::default();
    };
    if parts.len() != 2 {
        return HistoryChunk::default();
    }
    let next = parts.pop().and_then(text).and_then(|s| StreamId::parse(&s));
    let entries = parts.pop().map(entries).unwrap_or_default();
    HistoryChunk { entries, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_of_another_shape_is_an_empty_chunk() {
        let c = chunk(Value::Nil);
        assert!(c.entries.is_empty() && c.next.is_none());
        let c = chunk(Value::Array(vec![Value::Array(vec![]), Value::Nil]));
        assert!(c.entries.is_empty() && c.next.is_none());
    }

    #[test]
    fn the_next_id_is_read_from_the_second_part() {
        let c = chunk(Value::Array(vec![
            Value::Array(vec![]),
            Value::BulkString(b"5-1".to_vec()),
        ]));
        assert_eq!(c.next.map(|n| n.to_string()).as_deref(), Some("5-1"));
    }
}
