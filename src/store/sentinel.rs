//! Finding the primary through Redis Sentinel, and following a failover
//! (docs/protocol.md 11, `RTS_REDIS_SENTINELS`, `RTS_REDIS_MASTER_NAME`).
//!
//! redis-rs's connections (and deadpool's, whose recycle check is a PING
//! that a demoted primary still answers) stay with the address they were
//! opened on. So the sidecar does not trust a connection to tell it that
//! the primary moved: [`follow`] asks the Sentinels every
//! [`POLL`] which address is the primary (`SENTINEL
//! get-master-addr-by-name`, the answer Sentinel updates at
//! `+switch-master`), and when it changes, [`Store::switch_primary`]
//! replaces every command connection and the commit pipeline at once. The
//! presence bus (doorbell and presence) and the readers reconnect to the
//! store's current primary on their next fault (the old primary is gone, or
//! it closes its clients when it is demoted); consumer groups and the
//! function library are replicated, and a missing one is placed or loaded
//! again by the code that already handles a Redis restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};
use crate::backoff::Backoff;
use crate::config::Config;

/// How often the Sentinels are asked where the primary is.
pub const POLL: Duration = Duration::from_millis(500);
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);

/// The Sentinels of one master name.
#[derive(Clone)]
pub struct Sentinels {
    addrs: Vec<String>,
    /// One connection per Sentinel, kept between polls (a poll every
    /// 500 ms would otherwise open and close a TCP connection each time);
    /// dropped when it fails, and opened again at the next poll.
    conns: Arc<Mutex<HashMap<String, MultiplexedConnection>>>,
    master: String,
    password: Option<String>,
    /// `RTS_REDIS_URL`, whose scheme, user, password and database the
    /// primary's URL keeps (only the address comes from Sentinel).
    template: String,
}

impl Sentinels {
    /// The Sentinels of the configuration, if `RTS_REDIS_SENTINELS` is set.
    pub fn from_config(config: &Config) -> Option<Sentinels> {
        let addrs: Vec<String> = config
            .redis_sentinels
            .as_deref()?
            .split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        (!addrs.is_empty()).then(|| Sentinels {
            addrs,
            conns: Arc::default(),
            master: config.redis_master_name.clone().unwrap_or_default(),
            password: config.redis_sentinel_password.clone(),
            template: config.redis_url.clone(),
        })
    }

    /// The primary's URL, from the first Sentinel that knows it.
    pub async fn primary(&self) -> Result<String, StoreError> {
        let mut last = StoreError::Reply("no Sentinel configured".into());
        for addr in &self.addrs {
            match self.ask(addr).await {
                Ok(Some((host, port))) => return Ok(with_address(&self.template, &host, port)),
                Ok(None) => {
                    last = StoreError::Reply(format!(
                        "Sentinel {addr} does not know master {:?}",
                        self.master
                    ));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn ask(&self, addr: &str) -> Result<Option<(String, u16)>, StoreError> {
        let cached = self.conns.lock().await.get(addr).cloned();
        let mut conn = match cached {
            Some(c) => c,
            None => self.connect(addr).await?,
        };
        let reply: Result<Option<(String, String)>, _> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut conn)
            .await;
        let mut conns = self.conns.lock().await;
        let reply = match reply {
            Ok(r) => {
                conns.insert(addr.to_owned(), conn);
                r
            }
            Err(e) => {
                conns.remove(addr);
                return Err(StoreError::from_redis(e));
            }
        };
        Ok(reply.and_then(|(host, port)| Some((host, port.parse().ok()?))))
    }

    async fn connect(&self, addr: &str) -> Result<MultiplexedConnection, StoreError> {
        let url = match &self.password {
            Some(p) => format!("redis://:{p}@{addr}"),
            None => format!("redis://{addr}"),
        };
        let client = redis::Client::open(url).map_err(StoreError::Config)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(SENTINEL_TIMEOUT))
            .set_response_timeout(Some(SENTINEL_TIMEOUT));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(StoreError::from_redis)
    }

    /// The primary's URL, asking again while no Sentinel answers, until
    /// `shutdown`.
    pub async fn wait_for_primary(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<String, StoreError> {
        let mut backoff = Backoff::reconnect();
        loop {
            match self.primary().await {
                Ok(url) => return Ok(url),
                Err(e) => tracing::warn!(error = %e, "no Sentinel names the primary yet"),
            }
            if !backoff.wait(shutdown).await {
                return Err(StoreError::Reply(
                    "shut down before Sentinel answered".into(),
                ));
            }
        }
    }
}

/// Follows the primary the Sentinels name until `shutdown`: on a change,
/// the store's connections move to it and the function library is loaded
/// there if it is missing.
pub async fn follow(
    store: std::sync::Arc<Store>,
    sentinels: Sentinels,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let url = match sentinels.primary().await {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask Sentinel where the primary is");
                continue;
            }
        };
        let current = store.primary();
        if url == current {
            continue;
        }
        tracing::warn!(
            from = %redacted(&current),
            to = %redacted(&url),
            "the Redis primary changed (Sentinel failover); moving every connection"
        );
        if let Err(e) = store.switch_primary(&url) {
            tracing::error!(error = %e, "cannot open connections to the new primary");
            continue;
        }
        crate::metrics::redis_failover();
        if let Err(e) = store.load_library().await {
            tracing::warn!(error = %e, "cannot load the function library on the new primary yet; calls load it when they find it missing");
        }
    }
}

/// `template` with its host and port replaced by `host:port`.
fn with_address(template: &str, host: &str, port: u16) -> String {
    let (scheme, rest) = template.split_once("://").unwrap_or(("redis", template));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match userinfo {
        Some(u) => format!("{scheme}://{u}@{host}:{port}{path}"),
        None => format!("{scheme}://{host}:{port}{path}"),
    }
}

/// A Redis URL without its password, for logs and the stats route.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, hostport)) => format!("{scheme}://{hostport}{}", &rest[end..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_url_keeps_the_templates_scheme_credentials_and_database() {
        assert_eq!(
            with_address("redis://127.0.0.1:6379", "10.0.0.5", 7000),
            "redis://10.0.0.5:7000"
        );
        assert_eq!(
            with_address("rediss://app:secret@old:6379/2", "new", 6380),
            "rediss://app:secret@new:6380/2"
        );
        assert_eq!(with_address("redis://h", "::1", 1), "redis://[::1]:1");
    }

    #[test]
    fn urls_are_logged_without_their_password() {
        assert_eq!(redacted("redis://app:secret@h:1/0"), "redis://h:1/0");
        assert_eq!(redacted("redis://h:1"), "redis://h:1");
    }
}
