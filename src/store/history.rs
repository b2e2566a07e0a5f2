//! Reads of a table's event history: the latest events (for
//! `recent_changes`) and ranges after a client's last seen id (recovery).

use super::reply::InfoMap;
use super::tailer::{entries, Entry};
use super::{Store, StoreError};
use crate::protocol::StreamId;

/// The table's latest events up to and including `until`, oldest first: at
/// most `count` of them and `max_bytes` of entry data (but always the
/// newest), read by `rtsync_history` (`lua/history.lua`) so the reply never
/// grows with the events' size.
pub async fn recent_events(
    store: &Store,
    table: &str,
    until: StreamId,
    count: usize,
    max_bytes: usize,
) -> Result<Vec<Entry>, StoreError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let cmd = history_call(store, table, "recent", &[until], count, max_bytes);
    Ok(entries(store.fcall_read(&cmd).await?))
}

/// Events after `after` (exclusive) and up to `until` (inclusive), oldest
/// first: at most `count` and `max_bytes` of entry data (but always one).
pub async fn range(
    store: &Store,
    table: &str,
    after: StreamId,
    until: StreamId,
    count: usize,
    max_bytes: usize,
) -> Result<Vec<Entry>, StoreError> {
    let cmd = history_call(store, table, "range", &[after, until], count, max_bytes);
    Ok(entries(store.fcall_read(&cmd).await?))
}

/// How many events, and bytes of entry data, lie after `after` and up to
/// `until`; counting stops once either passes its bound, so the answer
/// says "more than" cheaply. Nothing is sent back but two numbers.
pub async fn size(
    store: &Store,
    table: &str,
    after: StreamId,
    until: StreamId,
    max_count: usize,
    max_bytes: usize,
) -> Result<(usize, usize), StoreError> {
    let cmd = history_call(store, table, "size", &[after, until], max_count, max_bytes);
    let (n, bytes): (usize, usize) = store.fcall_read(&cmd).await?;
    Ok((n, bytes))
}

/// `FCALL rtsync_history 1 <stream> <mode and ids...> <count> <bytes>`.
fn history_call(
    store: &Store,
    table: &str,
    mode: &str,
    ids: &[StreamId],
    count: usize,
    max_bytes: usize,
) -> redis::Cmd {
    let mut cmd = redis::cmd("FCALL");
    let keys = store.keys.history_keys(table);
    cmd.arg("rtsync_history")
        .arg(keys.len())
        .arg(&keys[..])
        .arg(mode);
    for id in ids {
        cmd.arg(id.to_string());
    }
    cmd.arg(count.max(1)).arg(max_bytes.max(1));
    cmd
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
/// `0-0` when nothing was ever removed) is replayable. An id before the
/// first entry held is "trimmed" when entries were removed from the stream
/// (retention), and "reset" when the stream never lost any (it began again
/// after the id's stream was lost); an id newer than anything appended, or
/// inside the held range but absent, is "reset" too (unless it was deleted).
pub async fn position(store: &Store, table: &str, seen: StreamId) -> Result<Position, StoreError> {
    let key = store.keys.events(table);
    let mut conn = store.conn();
    let info: Result<redis::Value, redis::RedisError> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(&key)
        .query_async(&mut conn)
        .await;
    let info = match info {
        Ok(v) => InfoMap(v),
        Err(e) if StoreError::is_no_such_key(&e) => {
            return Ok(if seen == StreamId::ZERO {
                Position::Replayable
            } else {
                Position::Reset
            });
        }
        Err(e) => return Err(StoreError::from_redis(e)),
    };
    let length = info.int("length").unwrap_or(0);
    let added = info.int("entries-added").unwrap_or(length);
    let removed_some = added > length;
    let last = info.id("last-generated-id").unwrap_or(StreamId::ZERO);
    let first = info.first_entry_id();
    let max_deleted = info.id("max-deleted-entry-id").unwrap_or(StreamId::ZERO);
    if seen == StreamId::ZERO {
        return Ok(if removed_some {
            Position::Trimmed
        } else {
            Position::Replayable
        });
    }
    if seen > last {
        return Ok(Position::Reset);
    }
    if first.is_none_or(|f| seen < f) {
        return Ok(if removed_some {
            Position::Trimmed
        } else {
            Position::Reset
        });
    }
    let exact: redis::Value = redis::cmd("XRANGE")
        .arg(&key)
        .arg(seen.to_string())
        .arg(seen.to_string())
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    if !entries(exact).is_empty() {
        return Ok(Position::Replayable);
    }
    Ok(if seen <= max_deleted {
        Position::Trimmed
    } else {
        Position::Reset
    })
}
