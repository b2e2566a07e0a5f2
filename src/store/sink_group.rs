//! The sink's Redis commands (docs/protocol.md section 9): the `rtsync-sink`
//! consumer group of every table stream, the live sinks, the leases that
//! say which sink delivers a table, the retention floor, claims, reads,
//! acknowledgements and the dead-letter stream. The sink (`crate::sink`)
//! decides what to do; this module is how it is done in Redis.

use redis::Value;

use super::reply::InfoMap;
use super::tailer::{held_entries, stream_pairs_with, text, Fields};
use super::{Store, StoreError};
use crate::change::StreamId;

/// The consumer group every sink process shares.
pub const GROUP: &str = "rtsync-sink";

/// One entry read by the group: its fields are gone (`None`) when it was
/// trimmed while pending.
pub struct HeldEntry {
    pub id: StreamId,
    pub fields: Option<Fields>,
}

/// Marks `consumer` alive at `now` in `<p>:sinks`, forgets sinks silent for
/// six times `alive_ms`; returns how many were seen within `alive_ms`.
pub async fn announce(
    store: &Store,
    consumer: &str,
    now: u64,
    alive_ms: u64,
) -> Result<usize, StoreError> {
    let key = store.keys.sinks();
    let (_, _, live): ((), (), usize) = redis::pipe()
        .cmd("ZADD")
        .arg(&key)
        .arg(now)
        .arg(consumer)
        .cmd("ZREMRANGEBYSCORE")
        .arg(&key)
        .arg("-inf")
        .arg(now.saturating_sub(alive_ms * 6))
        .cmd("ZCOUNT")
        .arg(&key)
        .arg(now.saturating_sub(alive_ms))
        .arg("+inf")
        .query_async(&mut store.conn())
        .await
        .map_err(StoreError::from_redis)?;
    Ok(live)
}

/// Creates the group at the stream's start (so every entry still held is
/// delivered); true when it was created now.
pub async fn create_group(store: &Store, table: &str) -> Result<bool, StoreError> {
    create_group_at(store, &store.keys.events(table), false).await
}

/// [`create_group`] of the stream at `stream` (a key); with `mkstream`, an
/// empty stream is made when there is none yet.
pub async fn create_group_at(
    store: &Store,
    stream: &str,
    mkstream: bool,
) -> Result<bool, StoreError> {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE").arg(stream).arg(GROUP).arg("0");
    if mkstream {
        cmd.arg("MKSTREAM");
    }
    let created: Result<(), redis::RedisError> = cmd.query_async(&mut store.conn()).await;
    match created {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(StoreError::from_redis(e)),
    }
}

/// Takes or renews (`ttl_ms` > 0) or gives up (0) `consumer`'s lease on a
/// table (`rtsync_sink_lease`, `lua/sink.lua`); whether it holds it.
pub async fn lease(
    store: &Store,
    table: &str,
    consumer: &str,
    ttl_ms: u64,
) -> Result<bool, StoreError> {
    lease_at(store, &store.keys.lease_keys(table), consumer, ttl_ms).await
}

/// [`lease`] of the lease at `keys` (`rtsync_sink_lease`'s KEYS).
pub async fn lease_at(
    store: &Store,
    keys: &[String; 1],
    consumer: &str,
    ttl_ms: u64,
) -> Result<bool, StoreError> {
    let held: i64 = store
        .fcall(
            redis::cmd("FCALL")
                .arg("rtsync_sink_lease")
                .arg(keys.len())
                .arg(&keys[..])
                .arg(consumer)
                .arg(ttl_ms),
        )
        .await?;
    Ok(held == 1)
}

/// Sets the table's retention floor (ms) for `ttl_ms`: the commit function
/// trims no entry newer than it.
pub async fn keep_floor(
    store: &Store,
    table: &str,
    floor_ms: u64,
    ttl_ms: u64,
) -> Result<(), StoreError> {
    redis::cmd("SET")
        .arg(store.keys.sink_floor(table))
        .arg(floor_ms)
        .arg("PX")
        .arg(ttl_ms.max(1))
        .query_async(&mut store.conn())
        .await
        .map_err(StoreError::from_redis)
}

/// Trims the stream's entries before `cut_ms` exactly; returns how many of
/// them lay from `from` (the group's oldest unacknowledged position) on:
/// the entries lost to the sink.
pub async fn trim_before(
    store: &Store,
    table: &str,
    from: Position,
    cut_ms: u64,
) -> Result<usize, StoreError> {
    let stream = store.keys.events(table);
    let mut conn = store.conn();
    let lost: Vec<Value> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg(from.xrange_start())
        .arg(cut_ms.saturating_sub(1))
        .arg("COUNT")
        .arg(1_000_000)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    let _: u64 = redis::cmd("XTRIM")
        .arg(&stream)
        .arg("MINID")
        .arg(cut_ms)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(lost.len())
}

/// Where the group's unacknowledged entries begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// At this pending entry (inclusive).
    At(StreamId),
    /// After the last delivered entry (nothing is pending).
    After(StreamId),
}

impl Position {
    fn xrange_start(self) -> String {
        match self {
            Position::At(id) => id.to_string(),
            Position::After(id) => format!("({id}"),
        }
    }

    /// The time of the oldest entry not acknowledged (or of the last one
    /// delivered: everything after it is newer).
    pub fn ms(self) -> u64 {
        match self {
            Position::At(id) | Position::After(id) => id.ms,
        }
    }
}

/// The group's state on a table: entries not acknowledged (read and
/// pending, or not read yet), and where they begin.
pub struct GroupState {
    pub behind: u64,
    pub oldest: Option<Position>,
}

pub async fn group_state(store: &Store, table: &str) -> Result<Option<GroupState>, StoreError> {
    let stream = store.keys.events(table);
    let mut conn = store.conn();
    let groups: Vec<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    let Some(group) = groups
        .into_iter()
        .map(InfoMap)
        .find(|g| g.text("name").as_deref() == Some(GROUP))
    else {
        return Ok(None);
    };
    let num = |k: &str| group.int(k).unwrap_or(0).max(0) as u64;
    let pending = num("pending");
    let oldest = if pending > 0 {
        let summary: Value = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(GROUP)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from_redis)?;
        let first = match summary {
            Value::Array(parts) => parts.into_iter().nth(1).and_then(text),
            _ => None,
        };
        first.as_deref().and_then(StreamId::parse).map(Position::At)
    } else {
        group.id("last-delivered-id").map(Position::After)
    };
    Ok(Some(GroupState {
        behind: num("lag") + pending,
        oldest,
    }))
}

/// Takes over every entry other consumers read but did not acknowledge
/// (`XAUTOCLAIM`, a page of `count` at a time).
pub async fn claim_all(
    store: &Store,
    table: &str,
    consumer: &str,
    count: usize,
) -> Result<(), StoreError> {
    claim_all_at(store, &store.keys.events(table), consumer, count).await
}

/// [`claim_all`] on the stream at `stream` (a key).
pub async fn claim_all_at(
    store: &Store,
    stream: &str,
    consumer: &str,
    count: usize,
) -> Result<(), StoreError> {
    let mut start = StreamId::ZERO;
    loop {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(start.to_string())
            .arg("COUNT")
            .arg(count)
            .arg("JUSTID")
            .query_async(&mut store.conn())
            .await
            .map_err(StoreError::from_redis)?;
        let next = match reply {
            Value::Array(parts) => parts.into_iter().next().and_then(text),
            _ => None,
        };
        match next.as_deref().and_then(StreamId::parse) {
            Some(n) if n != StreamId::ZERO => start = n,
            _ => return Ok(()),
        }
    }
}

/// Reads up to `count` entries for `consumer`: its own pending ones
/// (`pending`), or new ones.
pub async fn read(
    store: &Store,
    table: &str,
    consumer: &str,
    count: usize,
    pending: bool,
) -> Result<Vec<HeldEntry>, StoreError> {
    read_at(store, &store.keys.events(table), consumer, count, pending).await
}

/// [`read`] of the stream at `stream` (a key).
pub async fn read_at(
    store: &Store,
    stream: &str,
    consumer: &str,
    count: usize,
    pending: bool,
) -> Result<Vec<HeldEntry>, StoreError> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(if pending { "0" } else { ">" })
        .query_async(&mut store.conn())
        .await
        .map_err(StoreError::from_redis)?;
    Ok(stream_pairs_held(reply))
}

/// An `XREADGROUP` reply's entries, keeping those whose fields are gone.
fn stream_pairs_held(reply: Value) -> Vec<HeldEntry> {
    stream_pairs_with(reply, held_entries)
        .into_iter()
        .flat_map(|(_, entries)| entries)
        .map(|(id, fields)| HeldEntry { id, fields })
        .collect()
}

/// Acknowledges delivered entries.
pub async fn ack(store: &Store, table: &str, ids: &[StreamId]) -> Result<(), StoreError> {
    ack_at(store, &store.keys.events(table), ids).await
}

/// [`ack`] on the stream at `stream` (a key).
pub async fn ack_at(store: &Store, stream: &str, ids: &[StreamId]) -> Result<(), StoreError> {
    let ids: Vec<String> = ids.iter().map(StreamId::to_string).collect();
    let _: usize = redis::cmd("XACK")
        .arg(stream)
        .arg(GROUP)
        .arg(&ids)
        .query_async(&mut store.conn())
        .await
        .map_err(StoreError::from_redis)?;
    Ok(())
}

/// Copies entries to `<p>:{T}:dead` with `originalId`, `status` and
/// `reason`, trimmed to the retention like the stream.
pub async fn dead_letter(
    store: &Store,
    table: &str,
    entries: &[HeldEntry],
    status: u16,
    reason: &str,
) -> Result<(), StoreError> {
    dead_letter_at(store, &store.keys.dead(table), entries, status, reason).await
}

/// [`dead_letter`] into the stream at `dead` (a key).
pub async fn dead_letter_at(
    store: &Store,
    dead: &str,
    entries: &[HeldEntry],
    status: u16,
    reason: &str,
) -> Result<(), StoreError> {
    let cut = crate::clock::now_ms().saturating_sub(store.retention_ms);
    let mut pipe = redis::pipe();
    for e in entries {
        let cmd = pipe
            .cmd("XADD")
            .arg(dead)
            .arg("MINID")
            .arg("~")
            .arg(cut)
            .arg("*");
        for (k, v) in e.fields.iter().flatten() {
            cmd.arg(k).arg(v.as_slice());
        }
        cmd.arg("originalId")
            .arg(e.id.to_string())
            .arg("status")
            .arg(status)
            .arg("reason")
            .arg(reason);
    }
    let _: Value = pipe
        .query_async(&mut store.conn())
        .await
        .map_err(StoreError::from_redis)?;
    Ok(())
}
