//! Consumer groups as per-sidecar cursors (PROTOCOL.md section 7). A sidecar
//! starts serving a table by placing its group (named by its instance id) at
//! the stream's current end, so no backlog is replayed; it removes the group
//! when the table's last local subscriber leaves.

use redis::streams::StreamRangeReply;

use super::{Store, StoreError};

/// The id before any real entry.
pub const ZERO_ID: &str = "0-0";

/// Places this sidecar's group at the table stream's last entry and returns
/// that id (`0-0` for an empty stream). An entry appended between the two
/// calls is after the returned id and is read by the group, so nothing is
/// lost and the returned id is an exact "everything after this" cursor.
pub async fn start_serving(store: &Store, table: &str) -> Result<String, StoreError> {
    let key = store.keys.events(table);
    let mut conn = store.conn();
    let last: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    let cursor = last
        .ids
        .first()
        .map(|e| e.id.clone())
        .unwrap_or_else(|| ZERO_ID.to_owned());
    place_group(store, table, &cursor).await?;
    Ok(cursor)
}

/// Creates the group at `cursor`, or moves an existing one there (a
/// restarted sidecar with the same instance id).
pub async fn place_group(store: &Store, table: &str, cursor: &str) -> Result<(), StoreError> {
    let key = store.keys.events(table);
    let mut conn = store.conn();
    let created: Result<String, redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg(&store.instance_id)
        .arg(cursor)
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => {
            let _: String = redis::cmd("XGROUP")
                .arg("SETID")
                .arg(&key)
                .arg(&store.instance_id)
                .arg(cursor)
                .query_async(&mut conn)
                .await
                .map_err(StoreError::from_redis)?;
            Ok(())
        }
        Err(e) => Err(StoreError::from_redis(e)),
    }
}

/// Removes this sidecar's group from the table stream.
pub async fn stop_serving(store: &Store, table: &str) -> Result<(), StoreError> {
    let mut conn = store.conn();
    let _: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(store.keys.events(table))
        .arg(&store.instance_id)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(())
}

/// Orders stream ids (`ms-seq`); unparsable ids sort first.
pub fn parse_id(id: &str) -> (u64, u64) {
    id.split_once('-')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or((0, 0))
}
