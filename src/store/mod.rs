//! Everything that talks to Redis: connections, the function library, the
//! commit call, record states, stream group management, a table's start and
//! stop, the tailer and the presence bus. Upward it only calls the
//! [`events::EventHandler`] it is given (the hub), never the hub itself.
//!
//! Commands (commits, group management, reads) share a few multiplexed
//! [`ConnectionManager`]s, picked round-robin: each carries many concurrent
//! requests pipelined on one socket and reconnects by itself after a fault.
//! (A checkout pool such as deadpool-redis pings on every checkout, a second
//! round trip per edit, so it is not used on this path.) Stream reads never
//! block (the [`tailer`] reads when a table's doorbell rings), so they share
//! these connections. On a Redis Cluster there is one cluster connection
//! ([`conn::Conn`]), which keeps a connection per node.

pub mod commit;
pub mod conn;
pub mod discovery;
pub mod durable;
pub mod error;
pub mod events;
pub mod group_pipe;
pub mod groups;
pub mod history;
pub mod keys;
pub mod presence;
pub mod presence_bus;
pub mod records;
pub mod reply;
pub mod serving;
pub mod sink_group;
pub mod tailer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use conn::Conn;

pub use error::StoreError;
pub use keys::Keys;

/// The Redis Functions library, loaded with `FUNCTION LOAD REPLACE` at start:
/// the header and helpers, the commit, then presence (see `lua/rtsync.lua`).
pub const LIBRARY: &str = concat!(
    include_str!("../../lua/rtsync.lua"),
    include_str!("../../lua/commit.lua"),
    include_str!("../../lua/presence.lua"),
    include_str!("../../lua/streams.lua"),
    include_str!("../../lua/history.lua"),
    include_str!("../../lua/records.lua"),
    include_str!("../../lua/sink.lua"),
);

/// How long a command may wait for its reply before it counts as a fault.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Shared handle to Redis for one sidecar.
pub struct Store {
    conns: Vec<Conn>,
    /// Function calls on one Redis go out in groups (see `group_pipe`);
    /// a cluster's calls go one by one on the cluster connection.
    pipe: Option<group_pipe::GroupPipe>,
    next: AtomicUsize,
    /// The Redis URLs (one, or the cluster's seed nodes).
    urls: Vec<String>,
    cluster: bool,
    pub keys: Keys,
    pub instance_id: String,
    pub retention_ms: u64,
}

impl Store {
    /// Opens the command connections. On one Redis they connect lazily: the
    /// sidecar starts (and answers `/readyz` 503) even while Redis is down.
    /// A cluster connection needs a seed node to answer; it is retried until
    /// one does or `shutdown` comes.
    pub async fn open(
        urls: Vec<String>,
        cluster: bool,
        pool: usize,
        keys: Keys,
        instance_id: String,
        retention_ms: u64,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Store, StoreError> {
        let conns = if cluster {
            let client = cluster_client(&urls, None)?;
            let mut delay = Duration::from_millis(100);
            let conn = loop {
                match client.get_async_connection().await {
                    Ok(c) => break c,
                    Err(e) => tracing::warn!(error = %e, "cannot reach the Redis Cluster yet"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(StoreError::Reply("shut down before Redis answered".into())),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            };
            vec![Conn::Cluster(conn)]
        } else {
            let url = urls.first().cloned().unwrap_or_default();
            let client = redis::Client::open(url.as_str()).map_err(StoreError::Config)?;
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            (0..pool.max(1))
                .map(|_| {
                    ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                        .map(Conn::Single)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::Config)?
        };
        let pipe = match conns.first() {
            Some(Conn::Single(c)) => Some(group_pipe::GroupPipe::new(
                c.clone(),
                durable::Durable::none(),
            )),
            _ => None,
        };
        Ok(Store {
            conns,
            pipe,
            next: AtomicUsize::new(0),
            urls,
            cluster,
            keys,
            instance_id,
            retention_ms,
        })
    }

    /// Opens the store a process of `config` uses (the sidecar's or the
    /// sink's), with `pool` command connections on one Redis.
    pub async fn from_config(
        config: &crate::config::Config,
        pool: usize,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Store, StoreError> {
        let store = Store::open(
            config.redis_urls(),
            config.redis_cluster,
            pool,
            Keys::new(config.key_prefix.clone()),
            config.instance_id(),
            config.retention_secs.saturating_mul(1000),
            shutdown,
        )
        .await?;
        Ok(store.with_durability(durable::Durable::from_config(config)))
    }

    /// Commits acknowledged only once `durable` (`RTS_DURABLE_WRITES`):
    /// the commit pipeline is made again with its wait. Call before use.
    pub fn with_durability(mut self, durable: durable::Durable) -> Store {
        if let Some(Conn::Single(c)) = self.conns.first() {
            self.pipe = Some(group_pipe::GroupPipe::new(c.clone(), durable));
        }
        self
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// A command connection (cheap clone of a multiplexed handle): any but
    /// the commit pipeline's (the first), when there are others. Redis
    /// answers one connection's commands in order, so a slow read sharing
    /// the pipeline's connection would hold every commit behind it.
    pub fn conn(&self) -> Conn {
        if self.pipe.is_some() && self.conns.len() > 1 {
            let n = self.conns.len() - 1;
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            return self.conns[1 + i].clone();
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// Loads (or replaces) the `rtsync` function library.
    pub async fn load_library(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(LIBRARY)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from_redis)?;
        Ok(())
    }

    /// Runs an `FCALL` of our library. A Redis that restarted without
    /// persistence has lost the library: it is loaded again and the call
    /// retried once (nothing ran the first time).
    pub async fn fcall<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.fcall_in_pipe(cmd, false).await
    }

    /// [`Store::fcall`] of a commit: answered only once it is as durable
    /// as `RTS_DURABLE_WRITES` asks (else a timeout).
    pub async fn fcall_durable<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.fcall_in_pipe(cmd, true).await
    }

    async fn fcall_in_pipe<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        durable: bool,
    ) -> Result<T, StoreError> {
        let Some(pipe) = &self.pipe else {
            let first = cmd.query_async(&mut self.conn()).await;
            return self.retry_if_library_missing(cmd, first).await;
        };
        let call = || async {
            pipe.call(cmd.clone(), durable)
                .await
                .and_then(|v| T::from_redis_value(v).map_err(redis::RedisError::from))
                .map_err(StoreError::from_redis)
        };
        // The retry goes through the pipeline too, so a commit made then
        // still waits for its durability.
        match call().await {
            Err(e) if e.is_missing_function() => {
                tracing::warn!("rtsync function library missing; loading it again");
                self.load_library().await?;
                call().await
            }
            other => other,
        }
    }

    /// Runs a read-only `FCALL` (`rtsync_load`, `rtsync_history`) on a
    /// pooled connection, never in the commit pipeline: a slow read must
    /// not hold the commits grouped with it (see `group_pipe`).
    pub async fn fcall_read<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let first = cmd.query_async(&mut self.conn()).await;
        self.retry_if_library_missing(cmd, first).await
    }

    /// A call that found the library missing (nothing ran) is made again
    /// once the library is loaded.
    async fn retry_if_library_missing<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        first: redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        match first.map_err(StoreError::from_redis) {
            Err(e) if e.is_missing_function() => {
                tracing::warn!("rtsync function library missing; loading it again");
                self.load_library().await?;
                cmd.query_async(&mut self.conn())
                    .await
                    .map_err(StoreError::from_redis)
            }
            other => other,
        }
    }

    /// The members of a plain set (the registries of tables).
    pub async fn members(&self, set: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        redis::cmd("SMEMBERS")
            .arg(set)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from_redis)
    }

    /// True while Redis answers a PING on every pooled connection. Pinging
    /// them all also finds connections a Redis restart broke, so they are
    /// opened again before a user's request would fail on them.
    pub async fn ping(&self) -> bool {
        let pings = self.conns.iter().map(|c| {
            let mut conn = c.clone();
            async move {
                let ping = redis::cmd("PING").query_async::<String>(&mut conn).await;
                ping.is_ok()
            }
        });
        let all = futures_util::future::join_all(pings);
        matches!(tokio::time::timeout(COMMAND_TIMEOUT, all).await, Ok(r) if r.iter().all(|ok| *ok))
    }
}

/// A cluster client for `urls`, with our timeouts; with a push sender for
/// sharded pub/sub (RESP3).
pub fn cluster_client(
    urls: &[String],
    pushes: Option<presence_bus::PushSender>,
) -> Result<redis::cluster::ClusterClient, StoreError> {
    let mut builder = redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str))
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(COMMAND_TIMEOUT);
    if let Some(tx) = pushes {
        builder = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx);
    }
    builder.build().map_err(StoreError::Config)
}
