//! Test harness: throwaway `redis-server` processes on free ports, sidecar
//! processes (the real `rtsync` binary), a protocol client, tokens, and
//! deadline-based waiting. Every test starts its own servers.
#![allow(dead_code)]
// The harness fails its test loudly on any setup error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The harness drives Redis directly (setup, producers, inspection).
#![allow(clippy::disallowed_methods)]

pub mod client;
pub mod node;
pub mod postgres;
pub mod receiver;
pub mod redis_cluster;
pub mod redis_server;
pub mod sentinel;
pub mod sidecar;
pub mod sio;
pub mod tables;
pub mod tokens;

use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use client::Client;
#[allow(unused_imports)]
pub use redis_server::{cluster_mode, RedisServer};
pub use sidecar::Sidecar;

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of a Prometheus metric's series in `/metrics` text.
/// One command's text answer (`INFO`, `CLUSTER INFO`) from the Redis
/// server on `port`; `None` while it does not answer.
pub async fn redis_text(port: u16, args: &[&str]) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut c = client.get_multiplexed_async_connection().await.ok()?;
    let (name, rest) = args.split_first()?;
    redis::cmd(name).arg(rest).query_async(&mut c).await.ok()
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Ids of a table's stream entries, oldest first.
pub async fn stream_ids<C: redis::aio::ConnectionLike>(conn: &mut C, table: &str) -> Vec<String> {
    let reply: redis::Value = redis::cmd("XRANGE")
        .arg(format!("rts:{{{table}}}:events"))
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE");
    rtsync::store::tailer::entries(reply)
        .into_iter()
        .map(|(id, _)| id.to_string())
        .collect()
}

/// The store a sidecar named `instance` opens on `redis` (key prefix
/// `rts`, 24 h retention, the Lua key check on, as the test sidecars run),
/// with the library loaded: for tests of the store itself.
pub async fn store(redis: &RedisServer, instance: &str) -> rtsync::store::Store {
    let store = rtsync::store::Store::open(
        redis.url().split(',').map(str::to_owned).collect(),
        redis.is_cluster(),
        rtsync::store::Pool::of(4),
        rtsync::store::keys::Keys::new("rts"),
        instance.into(),
        86_400_000,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("store")
    .with_key_check(true);
    store.load_library().await.expect("library");
    store
}

/// A producer's `XADD` of a minimal record update to `table`'s stream,
/// ringing no doorbell; the entry's id.
pub async fn producer_entry(redis: &RedisServer, table: &str, record: &str) -> String {
    let mut conn = redis.conn().await;
    redis::cmd("XADD")
        .arg(format!("rts:{{{table}}}:events"))
        .arg("*")
        .arg("type")
        .arg("update")
        .arg("entityType")
        .arg("record")
        .arg("entityId")
        .arg(record)
        .arg("userId")
        .arg("billing-service")
        .query_async(&mut conn)
        .await
        .expect("XADD")
}

/// The `id`s of change events.
pub fn ids(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().expect("event id").to_owned())
        .collect()
}

/// One Redis and two sidecars on it: the normal production shape.
pub struct Cluster {
    pub redis: RedisServer,
    pub a: Sidecar,
    pub b: Sidecar,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let redis = RedisServer::start().await;
        let a = Sidecar::start(&redis, "sidecar-a", &[]).await;
        let b = Sidecar::start(&redis, "sidecar-b", &[]).await;
        Cluster { redis, a, b }
    }
}

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc`).
pub fn rss_bytes(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmRSS:")
}

/// The most resident memory process `pid` ever had (`VmHWM`).
pub fn peak_rss_bytes(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmHWM:")
}

fn proc_status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Binds `table` to `base` through the seed route (the API token's way to
/// say which base a table belongs to; docs/protocol.md 3.2).
pub fn bind_base(side: &Sidecar, table: &str, base: &str) {
    let path = format!("/api/v1/sync/tables/{table}/records");
    let body = serde_json::json!({"records": [], "baseId": base});
    let (status, v) = side.api("POST", &path, &body);
    assert_eq!(status, 200, "{v}");
}

/// Renames base `base` to `name` through the HTTP batch API (a base event);
/// returns the event's stream id.
pub fn rename_base(side: &Sidecar, base: &str, name: &str) -> String {
    let body = serde_json::json!({"changes": [{"type": "update", "entityType": "base",
        "entityId": base, "baseId": base, "userId": "admin",
        "changes": [{"fieldId": "name", "newValue": name}]}]});
    let (status, v) = side.api("POST", "/api/v1/sync/batch-changes", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["results"][0]["status"], "applied", "{v}");
    v["data"]["results"][0]["eventId"]
        .as_str()
        .expect("eventId")
        .to_owned()
}
