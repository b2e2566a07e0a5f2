//! Reads of a table's event history: the latest events (for
//! `recent_changes`) and ranges after a client's last seen id (recovery).

use super::tailer::{entries, Entry};
use super::{Store, StoreError};

/// The table's latest `count` events up to and including `until`, oldest
/// first.
pub async fn recent_events(
    store: &Store,
    table: &str,
    until: &str,
    count: usize,
) -> Result<Vec<Entry>, StoreError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut conn = store.conn();
    let reply: redis::Value = redis::cmd("XREVRANGE")
        .arg(store.keys.events(table))
        .arg(until)
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    let mut entries = entries(reply);
    entries.reverse();
    Ok(entries)
}

/// Up to `count` events after `after` (exclusive), oldest first.
pub async fn range_after(store: &Store, table: &str, after: &str, count: usize) -> Result<Vec<Entry>, StoreError> {
    let mut conn = store.conn();
    let reply: redis::Value = redis::cmd("XRANGE")
        .arg(store.keys.events(table))
        .arg(format!("({after}"))
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(entries(reply))
}

/// Where a client's last seen id stands in the table's stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Position {
    /// The stream holds everything after the id: replay from there.
    Replayable,
    /// Events after the id were trimmed (retention): reload the table.
    Trimmed,
    /// The id was never in this stream: the stream was lost and began
    /// again (Redis restarted without persistence, key evicted).
    Reset,
}

/// Classifies `last_seen` against the stream. An id the stream holds (or
/// `0-0` with nothing deleted) is replayable; an id at or before the
/// highest deleted id was trimmed; any other id is from a lost stream.
pub async fn position(store: &Store, table: &str, last_seen: &str) -> Result<Position, StoreError> {
    let key = store.keys.events(table);
    let mut conn = store.conn();
    let info: Result<redis::Value, redis::RedisError> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(&key)
        .query_async(&mut conn)
        .await;
    let info = match info {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => {
            return Ok(if super::groups::parse_id(last_seen) == (0, 0) {
                Position::Replayable
            } else {
                Position::Reset
            });
        }
        Err(e) => return Err(StoreError::from_redis(e)),
    };
    let field = |name: &str| -> Option<String> {
        let pairs: Vec<(redis::Value, redis::Value)> = match &info {
            redis::Value::Map(kv) => kv.clone(),
            redis::Value::Array(flat) => flat.chunks(2).filter_map(|c| Some((c.first()?.clone(), c.get(1)?.clone()))).collect(),
            _ => Vec::new(),
        };
        pairs.into_iter().find_map(|(k, v)| match (k, v) {
            (redis::Value::BulkString(k), redis::Value::BulkString(v)) if k == name.as_bytes() => String::from_utf8(v).ok(),
            (redis::Value::SimpleString(k), redis::Value::BulkString(v)) if k == name => String::from_utf8(v).ok(),
            _ => None,
        })
    };
    let seen = super::groups::parse_id(last_seen);
    let max_deleted = field("max-deleted-entry-id").map(|id| super::groups::parse_id(&id)).unwrap_or((0, 0));
    let last = field("last-generated-id").map(|id| super::groups::parse_id(&id)).unwrap_or((0, 0));
    if seen == (0, 0) {
        return Ok(if max_deleted > (0, 0) { Position::Trimmed } else { Position::Replayable });
    }
    if seen > last {
        return Ok(Position::Reset);
    }
    let exact: redis::Value = redis::cmd("XRANGE")
        .arg(&key)
        .arg(last_seen)
        .arg(last_seen)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    if !entries(exact).is_empty() {
        return Ok(Position::Replayable);
    }
    Ok(if seen <= max_deleted { Position::Trimmed } else { Position::Reset })
}
