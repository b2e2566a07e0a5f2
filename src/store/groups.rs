//! Consumer groups as per-sidecar cursors (docs/protocol.md section 7). A sidecar
//! starts serving a table by placing its group (named by its instance id) at
//! the stream's current end, so no backlog is replayed; it removes the group
//! when the table's last local subscriber leaves.

use redis::streams::StreamRangeReply;

use super::{Store, StoreError};
use crate::change::StreamId;

/// Places this sidecar's group at the table stream's last entry and returns
/// that id (`0-0` for an empty stream). An entry appended between the two
/// calls is after the returned id and is read by the group, so nothing is
/// lost and the returned id is an exact "everything after this" cursor.
pub async fn start_serving(store: &Store, table: &str) -> Result<StreamId, StoreError> {
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
        .and_then(|e| StreamId::parse(&e.id))
        .unwrap_or(StreamId::ZERO);
    place_group(store, table, cursor).await?;
    let _: i64 = redis::cmd("SADD")
        .arg(store.keys.streams())
        .arg(table)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(cursor)
}

/// Creates the group at `cursor`, or moves an existing one there (a
/// restarted sidecar with the same instance id).
pub async fn place_group(store: &Store, table: &str, cursor: StreamId) -> Result<(), StoreError> {
    let cursor = cursor.to_string();
    let cursor = cursor.as_str();
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

/// Moves this sidecar's existing group on `table` to `cursor` (the last
/// event delivered here): after entries were delivered from their
/// doorbells, the next read then returns only what came after them
/// instead of making Redis send them again (`super::ring`). A missing
/// group is left to the read, which restores it.
pub async fn advance_group(store: &Store, table: &str, cursor: StreamId) -> Result<(), StoreError> {
    let set: Result<String, redis::RedisError> = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(store.keys.events(table))
        .arg(&store.instance_id)
        .arg(cursor.to_string())
        .query_async(&mut store.conn())
        .await;
    match set {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("NOGROUP") => Ok(()),
        Err(e) => Err(StoreError::from_redis(e)),
    }
}

/// Removes this sidecar's group from the table stream; a stream left
/// empty and without groups is deleted, and a stream without groups leaves
/// the registry, so idle tables cost nothing (see `lua/streams.lua`).
pub async fn stop_serving(store: &Store, table: &str) -> Result<(), StoreError> {
    release(store, table, &store.instance_id).await
}

/// `rtsync_stream_release` of `group` ("" for none), then the registry.
async fn release(store: &Store, table: &str, group: &str) -> Result<(), StoreError> {
    let mut cmd = redis::cmd("FCALL");
    let keys = store.keys.release_keys(table);
    cmd.arg("rtsync_stream_release")
        .arg(keys.len())
        .arg(&keys[..])
        .arg(group);
    let left: i64 = store.fcall(&cmd).await?;
    if left <= 0 {
        forget(store, table).await?;
    }
    Ok(())
}

/// Drops a table from the registry, unless a group appeared meanwhile (a
/// sidecar places its group, then registers: checking again after the
/// removal means one of the two always sees the other).
async fn forget(store: &Store, table: &str) -> Result<(), StoreError> {
    let mut conn = store.conn();
    let _: i64 = redis::cmd("SREM")
        .arg(store.keys.streams())
        .arg(table)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    let groups: Result<Vec<redis::Value>, _> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(store.keys.events(table))
        .query_async(&mut conn)
        .await;
    if groups.is_ok_and(|g| !g.is_empty()) {
        let _: i64 = redis::cmd("SADD")
            .arg(store.keys.streams())
            .arg(table)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from_redis)?;
    }
    Ok(())
}

/// Marks this sidecar alive for `ttl_ms`.
pub async fn announce_instance(store: &Store, ttl_ms: u64) -> Result<(), StoreError> {
    let mut conn = store.conn();
    let _: () = redis::cmd("SET")
        .arg(store.keys.instance(&store.instance_id))
        .arg(crate::now_ms())
        .arg("PX")
        .arg(ttl_ms.max(1))
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(())
}

/// Which sidecar instances still announce themselves, asked once per
/// instance during one janitor pass (groups and presence both ask).
#[derive(Default)]
pub struct Liveness(std::collections::HashMap<String, bool>);

impl Liveness {
    pub async fn is_alive(&mut self, store: &Store, instance: &str) -> Result<bool, StoreError> {
        if instance == store.instance_id {
            return Ok(true);
        }
        if let Some(alive) = self.0.get(instance) {
            return Ok(*alive);
        }
        let mut conn = store.conn();
        let alive: bool = redis::cmd("EXISTS")
            .arg(store.keys.instance(instance))
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from_redis)?;
        self.0.insert(instance.to_owned(), alive);
        Ok(alive)
    }
}

/// Destroys the groups of sidecars that stopped announcing themselves, so
/// groups on a stream do not grow with every sidecar that ever ran. Returns
/// how many were removed.
pub async fn remove_gone_groups(store: &Store, liveness: &mut Liveness) -> Result<u64, StoreError> {
    let mut conn = store.conn();
    let tables = store.members(&store.keys.streams()).await?;
    let mut removed = 0;
    for table in tables {
        let key = store.keys.events(&table);
        let groups: Result<Vec<redis::Value>, _> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(&mut conn)
            .await;
        let groups = match groups {
            Ok(g) if g.is_empty() => {
                release(store, &table, "").await?;
                continue;
            }
            Ok(g) => g,
            Err(e) if StoreError::is_no_such_key(&e) => {
                forget(store, &table).await?;
                continue;
            }
            Err(e) => return Err(StoreError::from_redis(e)),
        };
        for name in groups
            .into_iter()
            .filter_map(|g| super::reply::InfoMap(g).text("name"))
        {
            if !liveness.is_alive(store, &name).await? {
                release(store, &table, &name).await?;
                tracing::info!(
                    table,
                    group = name,
                    "removed the consumer group of a gone sidecar"
                );
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// This sidecar's lag on a table (entries not yet delivered), if the group
/// exists and Redis reports it. The group trails entries delivered from
/// their doorbells until the next read (`super::ring`), so when the last
/// event delivered here (`delivered`, the hub's cursor) is past the
/// group's, the lag is 0 unless an entry follows it (then the group's lag,
/// an upper bound). The probe asks for one entry: its size is bounded by
/// the event bound, never by how far the group trails.
pub async fn own_lag(
    store: &Store,
    table: &str,
    delivered: Option<StreamId>,
) -> Result<Option<u64>, StoreError> {
    let Some((group_at, lag)) = group_lag(store, table).await? else {
        return Ok(None);
    };
    match delivered {
        Some(cursor) if cursor > group_at => {
            let after: redis::Value = redis::cmd("XRANGE")
                .arg(store.keys.events(table))
                .arg(format!("({cursor}"))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut store.conn())
                .await
                .map_err(StoreError::from_redis)?;
            let pending = matches!(after, redis::Value::Array(entries) if !entries.is_empty());
            Ok(Some(if pending { lag } else { 0 }))
        }
        _ => Ok(Some(lag)),
    }
}

/// The group's last delivered id and its lag, as Redis reports them.
async fn group_lag(store: &Store, table: &str) -> Result<Option<(StreamId, u64)>, StoreError> {
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(store.keys.events(table))
        .query_async(&mut store.conn())
        .await
        .or_else(|e| {
            if StoreError::is_no_such_key(&e) {
                Ok(Vec::new())
            } else {
                Err(StoreError::from_redis(e))
            }
        })?;
    Ok(groups
        .into_iter()
        .map(super::reply::InfoMap)
        .find(|g| g.text("name").as_deref() == Some(store.instance_id.as_str()))
        .and_then(|g| {
            let at = g.id("last-delivered-id").unwrap_or_default();
            Some((at, g.int("lag")?.max(0) as u64))
        }))
}
