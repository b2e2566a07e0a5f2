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
