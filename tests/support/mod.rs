//! Test harness: throwaway `redis-server` processes on free ports, sidecar
//! processes (the real `rtsync` binary), a protocol client, tokens, and
//! deadline-based waiting. Every test starts its own servers.
#![allow(dead_code)]

pub mod client;
pub mod redis_cluster;
pub mod redis_server;
pub mod sidecar;
pub mod tokens;

use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use client::Client;
pub use redis_server::RedisServer;
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
