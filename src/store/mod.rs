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

// The one module that builds Redis commands and pipelines (clippy.toml's
// disallowed-methods keeps `redis::cmd`/`redis::pipe` out of the rest).
#![allow(clippy::disallowed_methods)]

pub mod audit;
pub mod bases;
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
pub mod library;
pub mod presence;
pub mod presence_bus;
pub mod record_history;
pub mod records;
pub mod reply;
pub mod ring;
pub mod sentinel;
pub mod serving;
pub mod session_port;
pub mod sink_group;
pub mod tailer;
pub mod undo;
pub mod views;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use conn::Conn;

pub use error::StoreError;

use crate::backoff::Backoff;
use crate::locks::{read, write};
pub use keys::Keys;

/// The Redis Functions library, loaded with `FUNCTION LOAD REPLACE` at
/// start (see `lua/rtsync.lua`), and the same with its key check.
pub use library::{LIBRARY, LIBRARY_KEY_CHECK};

/// How long a command may wait for its reply before it counts as a fault.
/// Ids a record's history index keeps unless configured
/// (`RTS_RECORD_HISTORY`'s default).
const DEFAULT_RECORD_HISTORY: usize = 100;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Shared handle to Redis for one sidecar.
pub struct Store {
    /// The connections in use; swapped whole when the primary changes
    /// (Sentinel), while calls in flight finish on the old ones.
    backend: RwLock<Arc<Backend>>,
    next: AtomicUsize,
    /// The Redis URLs (the primary's, or the cluster's seed nodes).
    urls: RwLock<Vec<String>>,
    cluster: bool,
    pool: usize,
    durable: durable::Durable,
    pub keys: Keys,
    pub instance_id: String,
    pub retention_ms: u64,
    /// Most ids a record's history index keeps (`RTS_RECORD_HISTORY`).
    pub record_history: usize,
    /// Load the library with its key check (`RTS_LUA_KEY_CHECK`).
    key_check: bool,
}

/// The command connections to one Redis (or one cluster connection).
struct Backend {
    conns: Vec<Conn>,
    /// Function calls on one Redis go out in groups (see `group_pipe`);
    /// a cluster's calls go one by one on the cluster connection.
    pipe: Option<Arc<group_pipe::GroupPipe>>,
    /// On a cluster with durable writes: commits grouped per slot, each
    /// group ending with its wait on the slot's node (see `group_pipe`).
    slot_pipes: Option<group_pipe::SlotPipes>,
}

impl Backend {
    /// The group pipe a function call goes through, if any: on one Redis
    /// the one pipe; on a cluster, a durable call's slot's pipe.
    fn pipe_for(&self, cmd: &redis::Cmd, durable: bool) -> Option<Arc<group_pipe::GroupPipe>> {
        match (&self.pipe, &self.slot_pipes) {
            (Some(pipe), _) => Some(pipe.clone()),
            (None, Some(slots)) if durable => slots.for_call(cmd),
            _ => None,
        }
    }
}

impl Backend {
    /// `pool` lazily connecting managers to `url`: the sidecar starts (and
    /// answers `/readyz` 503) even while Redis is down.
    fn single(url: &str, pool: usize, durable: durable::Durable) -> Result<Backend, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::Config)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conns = (0..pool.max(1))
            .map(|_| {
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                    .map(Conn::Single)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::Config)?;
        let pipe = conns
            .first()
            .map(|c| Arc::new(group_pipe::GroupPipe::new(c.clone(), durable)));
        Ok(Backend {
            conns,
            pipe,
            slot_pipes: None,
        })
    }
}

/// The command connections a store opens on one Redis: how many, and the
/// durability its commits wait for (`RTS_DURABLE_WRITES`).
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    pub size: usize,
    pub durable: durable::Durable,
}

impl Pool {
    /// `size` connections; commits acknowledged once in the primary.
    pub fn of(size: usize) -> Pool {
        Pool {
            size,
            durable: durable::Durable::none(),
        }
    }
}

impl Store {
    /// Opens the command connections. On one Redis they connect lazily. A
    /// cluster connection needs a seed node to answer; it is retried until
    /// one does or `shutdown` comes.
    pub async fn open(
        urls: Vec<String>,
        cluster: bool,
        pool: Pool,
        keys: Keys,
        instance_id: String,
        retention_ms: u64,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Store, StoreError> {
        let backend = if cluster {
            let client = cluster_client(&urls, None)?;
            let mut backoff = Backoff::reconnect();
            let conn = loop {
                match client.get_async_connection().await {
                    Ok(c) => break c,
                    Err(e) => tracing::warn!(error = %e, "cannot reach the Redis Cluster yet"),
                }
                if !backoff.wait(shutdown).await {
                    return Err(StoreError::Reply("shut down before Redis answered".into()));
                }
            };
            let conn = Conn::Cluster(conn);
            let slot_pipes = (pool.durable.mode != crate::config::Durability::None)
                .then(|| group_pipe::SlotPipes::new(conn.clone(), pool.durable));
            Backend {
                conns: vec![conn],
                pipe: None,
                slot_pipes,
            }
        } else {
            let url = urls.first().cloned().unwrap_or_default();
            Backend::single(&url, pool.size, pool.durable)?
        };
        Ok(Store {
            backend: RwLock::new(Arc::new(backend)),
            next: AtomicUsize::new(0),
            urls: RwLock::new(urls),
            cluster,
            pool: pool.size,
            durable: pool.durable,
            keys,
            instance_id,
            retention_ms,
            record_history: DEFAULT_RECORD_HISTORY,
            key_check: false,
        })
    }

    /// The store, loading the function library with its key check when
    /// `on` (a test aid: every key a call touches must be in its KEYS).
    pub fn with_key_check(mut self, on: bool) -> Store {
        self.key_check = on;
        self
    }

    /// The store, keeping at most `n` ids in each record's history index
    /// (`RTS_RECORD_HISTORY`).
    pub fn with_record_history(mut self, n: usize) -> Store {
        self.record_history = n;
        self
    }

    /// Opens the store a process of `config` uses (the sidecar's or the
    /// sink's), with `pool` command connections on one Redis. With
    /// `RTS_REDIS_SENTINELS` the primary is asked of Sentinel first
    /// (waiting while none answers).
    pub async fn from_config(
        config: &crate::config::Config,
        pool: usize,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Store, StoreError> {
        let urls = match sentinel::Sentinels::from_config(config) {
            Some(sentinels) => vec![sentinels.wait_for_primary(shutdown).await?],
            None => config.redis_urls(),
        };
        let pool = Pool {
            size: pool,
            durable: durable::Durable::from_config(config),
        };
        Store::open(
            urls,
            config.redis_cluster,
            pool,
            Keys::new(config.key_prefix.clone()),
            config.instance_id(),
            u64::try_from(config.retention.as_millis()).unwrap_or(u64::MAX),
            shutdown,
        )
        .await
        .map(|store| {
            store
                .with_key_check(config.lua_key_check)
                .with_record_history(config.record_history.get())
        })
    }

    /// Points every command connection at a new primary (a Sentinel
    /// failover): new connections and a new commit pipeline; calls in
    /// flight finish (or fail, `timeout`) on the old ones. The presence bus
    /// and readers reconnect to [`Store::urls`] on their next fault.
    pub fn switch_primary(&self, url: &str) -> Result<(), StoreError> {
        let backend = Backend::single(url, self.pool, self.durable)?;
        *write(&self.backend) = Arc::new(backend);
        *write(&self.urls) = vec![url.to_owned()];
        Ok(())
    }

    /// The URL of the primary in use (the first seed node of a cluster).
    pub fn primary(&self) -> String {
        read(&self.urls).first().cloned().unwrap_or_default()
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The Redis URLs in use: the primary's, or the cluster's seed nodes.
    pub fn urls(&self) -> Vec<String> {
        read(&self.urls).clone()
    }

    fn backend(&self) -> Arc<Backend> {
        read(&self.backend).clone()
    }

    /// A command connection (cheap clone of a multiplexed handle): any but
    /// the commit pipeline's (the first), when there are others. Redis
    /// answers one connection's commands in order, so a slow read sharing
    /// the pipeline's connection would hold every commit behind it.
    pub fn conn(&self) -> Conn {
        let b = self.backend();
        if b.pipe.is_some() && b.conns.len() > 1 {
            let n = b.conns.len() - 1;
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            return b.conns[1 + i].clone();
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % b.conns.len().max(1);
        b.conns[i].clone()
    }

    /// Loads (or replaces) the `rtsync` function library (with its key
    /// check when the store was opened with it).
    pub async fn load_library(&self) -> Result<(), StoreError> {
        let text =
            library::library(self.key_check).map_err(|e| StoreError::Reply(e.to_string()))?;
        let mut conn = self.conn();
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(text)
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
        let backend = self.backend();
        let Some(pipe) = backend.pipe_for(cmd, durable) else {
            if durable && self.durable.mode != crate::config::Durability::None {
                return self.fcall_durable_on_cluster(cmd).await;
            }
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
        self.reloading_library(call).await
    }

    /// Runs `call`; when Redis lost the function library (a restart
    /// without persistence, a `FUNCTION FLUSH`), loads it again and runs
    /// `call` once more, the same way for every path that calls it.
    async fn reloading_library<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        match call().await {
            Err(e) if e.is_missing_function() => {
                tracing::warn!("rtsync function library missing; loading it again");
                self.load_library().await?;
                call().await
            }
            other => other,
        }
    }

    /// A commit on a cluster with `RTS_DURABLE_WRITES`: the commit and its
    /// wait go to the commit's node together (`durable::call_on_cluster`);
    /// a missing library is loaded again and the pair sent once more.
    async fn fcall_durable_on_cluster<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let call = || async {
            durable::call_on_cluster(&mut self.conn(), cmd, self.durable)
                .await
                .and_then(|v| T::from_redis_value(v).map_err(redis::RedisError::from))
                .map_err(StoreError::from_redis)
        };
        self.reloading_library(call).await
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

    /// Runs an `FCALL` that writes off the commit path (the audit log's
    /// appends) on a pooled connection, like [`Store::fcall_read`]: it
    /// never waits in, or holds up, the commit pipeline.
    pub async fn fcall_aside<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.fcall_read(cmd).await
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
        let backend = self.backend();
        let pings = backend.conns.iter().map(|c| {
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
