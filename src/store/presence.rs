//! Calls of the presence functions in `lua/rtsync.lua`: join, leave,
//! expire, touch and sweep. Each is one `FCALL` that updates the table's
//! presence hashes and publishes the notice on the table's sharded channel
//! atomically, so every sidecar sees state and notices agree.

use serde::Deserialize;
use serde_json::Value;

use super::groups::Liveness;
use super::{Store, StoreError};

/// What a join found.
#[derive(Debug, Deserialize)]
pub struct Joined {
    /// `joined`, `reconnected` (presence was still there) or `present`
    /// (another tab of the same user).
    pub status: String,
    pub color: String,
    /// Every present user of the table, this one included.
    #[serde(default, deserialize_with = "list_or_empty_object")]
    pub users: Vec<Value>,
}

/// cjson encodes an empty Lua table as `{}`; read it as an empty list.
fn list_or_empty_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items,
        _ => Vec::new(),
    })
}

/// What a touch carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    Heartbeat,
    Cursor,
    Selection,
    /// v1.3: an editing start or stop `{recordId, fieldId, state, ttlMs}`.
    Editing,
    /// v1.3: the rows the user sees.
    Viewport,
}

impl Touch {
    fn as_str(self) -> &'static str {
        match self {
            Touch::Heartbeat => "heartbeat",
            Touch::Cursor => "cursor",
            Touch::Selection => "selection",
            Touch::Editing => "editing",
            Touch::Viewport => "viewport",
        }
    }
}

fn presence_cmd(store: &Store, function: &str, table: &str) -> redis::Cmd {
    let k = &store.keys;
    let mut cmd = redis::cmd("FCALL");
    let keys = k.presence_keys(table);
    cmd.arg(function)
        .arg(keys.len())
        .arg(&keys[..])
        .arg(k.presence_channel(table))
        .arg(crate::now_ms());
    cmd
}

async fn run<T: redis::FromRedisValue>(store: &Store, cmd: redis::Cmd) -> Result<T, StoreError> {
    store.fcall(&cmd).await
}

/// Adds connection `conn` of `user` (a UserPresence-shaped JSON object).
pub async fn join(
    store: &Store,
    table: &str,
    conn: &str,
    user: &Value,
) -> Result<Joined, StoreError> {
    let mut cmd = presence_cmd(store, "rtsync_presence_join", table);
    cmd.arg(conn).arg(user.to_string());
    let reply: String = run(store, cmd).await?;
    // Remember the table for the sweeper (a plain set: it spans slots).
    let mut c = store.conn();
    let _: Result<i64, _> = redis::cmd("SADD")
        .arg(store.keys.presence_tables())
        .arg(table)
        .query_async(&mut c)
        .await;
    serde_json::from_str(&reply).map_err(|e| StoreError::Reply(format!("{e}: {reply}")))
}

/// Removes a connection; returns how many the user still has on the table.
pub async fn leave(store: &Store, table: &str, conn: &str, user: &str) -> Result<i64, StoreError> {
    let mut cmd = presence_cmd(store, "rtsync_presence_leave", table);
    cmd.arg(conn).arg(user);
    run(store, cmd).await
}

/// Removes the user if they have had no connection for `grace_ms`.
pub async fn expire(
    store: &Store,
    table: &str,
    user: &str,
    grace_ms: u64,
) -> Result<bool, StoreError> {
    let mut cmd = presence_cmd(store, "rtsync_presence_expire", table);
    cmd.arg(user).arg(grace_ms);
    let removed: i64 = run(store, cmd).await?;
    Ok(removed > 0)
}

/// Refreshes `lastSeen` (and the cursor or selection, which are relayed).
/// Returns false when the user has no presence any more.
pub async fn touch(
    store: &Store,
    table: &str,
    conn: &str,
    user: &str,
    kind: Touch,
    value: &Value,
) -> Result<bool, StoreError> {
    let mut cmd = presence_cmd(store, "rtsync_presence_touch", table);
    cmd.arg(conn)
        .arg(user)
        .arg(kind.as_str())
        .arg(value.to_string());
    let found: i64 = run(store, cmd).await?;
    Ok(found > 0)
}

/// Ends `user`'s editing indicator on `table` when it was not renewed in
/// time (it is due); true when it ended (and `user_editing` "stop" went
/// out).
pub async fn expire_editing(store: &Store, table: &str, user: &str) -> Result<bool, StoreError> {
    let mut cmd = presence_cmd(store, "rtsync_presence_editing_expire", table);
    cmd.arg(user);
    let ended: i64 = run(store, cmd).await?;
    Ok(ended > 0)
}

/// Removes stale presence of every table that has some; returns how many
/// users were removed. Per table, in one pass: the connections of sidecars
/// that stopped announcing themselves (killed, not drained) go first, so
/// their users get `user_left` now instead of after the presence TTL; then
/// users stale for `ttl_ms` or gone for `grace_ms`.
pub async fn sweep_all(
    store: &Store,
    ttl_ms: u64,
    grace_ms: u64,
    liveness: &mut Liveness,
) -> Result<u64, StoreError> {
    let mut conn = store.conn();
    let mut removed = 0u64;
    for table in store.members(&store.keys.presence_tables()).await? {
        prune_gone_instances(store, &table, liveness).await?;
        let mut cmd = presence_cmd(store, "rtsync_presence_sweep", &table);
        cmd.arg(ttl_ms).arg(grace_ms);
        let n: i64 = run(store, cmd).await?;
        removed += n.max(0) as u64;
        let left: i64 = redis::cmd("HLEN")
            .arg(store.keys.presence(&table))
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from_redis)?;
        if left == 0 {
            let _: i64 = redis::cmd("SREM")
                .arg(store.keys.presence_tables())
                .arg(&table)
                .query_async(&mut conn)
                .await
                .map_err(StoreError::from_redis)?;
        }
    }
    Ok(removed)
}

/// The sidecar instance a connection id belongs to (`<instance>.<tag>.<n>`).
pub fn instance_of(conn: &str) -> Option<&str> {
    let mut parts = conn.rsplitn(3, '.');
    let (_n, _tag) = (parts.next()?, parts.next()?);
    parts.next().filter(|i| !i.is_empty())
}

/// Removes `table`'s presence connections of gone sidecars.
async fn prune_gone_instances(
    store: &Store,
    table: &str,
    liveness: &mut Liveness,
) -> Result<(), StoreError> {
    let mut conn = store.conn();
    let flat: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(store.keys.presence(table))
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    let mut gone = Vec::new();
    for (_, doc) in flat {
        let Ok(p) = serde_json::from_str::<Value>(&doc) else {
            continue;
        };
        let conns = p["conns"].as_array().into_iter().flatten();
        for c in conns.filter_map(Value::as_str) {
            let Some(instance) = instance_of(c) else {
                continue;
            };
            if !liveness.is_alive(store, instance).await? {
                gone.push(c.to_owned());
            }
        }
    }
    if gone.is_empty() {
        return Ok(());
    }
    let mut cmd = presence_cmd(store, "rtsync_presence_prune", table);
    cmd.arg(Value::from(gone).to_string());
    let n: i64 = run(store, cmd).await?;
    tracing::info!(
        table,
        connections = n,
        "removed the presence of a gone sidecar"
    );
    Ok(())
}

/// Takes the fleet-wide sweeper lock for `ttl_ms`; false when another
/// sidecar holds it.
pub async fn try_lock_sweeper(store: &Store, ttl_ms: u64) -> Result<bool, StoreError> {
    let mut conn = store.conn();
    let got: Option<String> = redis::cmd("SET")
        .arg(store.keys.sweeper_lock())
        .arg(&store.instance_id)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms.max(1))
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(got.is_some())
}

/// How many users are present on a table.
pub async fn count(store: &Store, table: &str) -> Result<u64, StoreError> {
    redis::cmd("HLEN")
        .arg(store.keys.presence(table))
        .query_async(&mut store.conn())
        .await
        .map_err(StoreError::from_redis)
}

#[cfg(test)]
mod tests {
    use super::instance_of;

    #[test]
    fn a_connection_id_names_its_instance() {
        assert_eq!(instance_of("sidecar-a.00ff.7"), Some("sidecar-a"));
        assert_eq!(
            instance_of("host.example.com-12.00ff.7"),
            Some("host.example.com-12")
        );
        assert_eq!(instance_of("00ff.7"), None, "ids without an instance");
    }
}
