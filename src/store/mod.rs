//! Everything that talks to Redis: connections, the function library, the
//! commit call, stream group management and the tailer.
//!
//! Commands (commits, group management, reads) share a few multiplexed
//! [`ConnectionManager`]s, picked round-robin: each carries many concurrent
//! requests pipelined on one socket and reconnects by itself after a fault.
//! (A checkout pool such as deadpool-redis pings on every checkout, a second
//! round trip per edit, so it is not used on this path.) Blocking stream reads
//! get connections of their own in [`tailer`], never shared with commands.

pub mod commit;
pub mod error;
pub mod groups;
pub mod history;
pub mod keys;
pub mod presence;
pub mod presence_bus;
pub mod reply;
pub mod tailer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use error::StoreError;
pub use keys::Keys;

/// The Redis Functions library, loaded with `FUNCTION LOAD REPLACE` at start.
pub const LIBRARY: &str = include_str!("../../lua/rtsync.lua");

/// How long a command may wait for its reply before it counts as a fault.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Shared handle to Redis for one sidecar.
pub struct Store {
    client: redis::Client,
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    pub keys: Keys,
    pub instance_id: String,
    pub retention_ms: u64,
}

impl Store {
    /// Opens the command connections lazily: the sidecar starts (and answers
    /// `/readyz` 503) even while Redis is down.
    pub fn open(
        url: &str,
        pool: usize,
        keys: Keys,
        instance_id: String,
        retention_ms: u64,
    ) -> Result<Store, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::Config)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conns = (0..pool.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::Config)?;
        Ok(Store {
            client,
            conns,
            next: AtomicUsize::new(0),
            keys,
            instance_id,
            retention_ms,
        })
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        false
    }

    /// A command connection (cheap clone of a multiplexed handle).
    pub fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
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

    /// True while Redis answers a PING.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(COMMAND_TIMEOUT, ping).await, Ok(Ok(_)))
    }
}
