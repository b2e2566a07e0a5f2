//! Finding every table stream and base stream, including streams producers
//! `XADD` to directly and tables no sidecar serves: `SCAN MATCH
//! <p>:{*}:events TYPE stream` (and `<p>:{*}:base-events`) on one Redis, or on every primary of a Redis Cluster (their
//! addresses come from `CLUSTER NODES`; each primary holds its own slots'
//! keys, so together they hold every stream).

use std::collections::{BTreeSet, HashMap};

use redis::aio::MultiplexedConnection;

use super::{Conn, Store, StoreError};

/// Keys per SCAN step.
const SCAN_COUNT: usize = 1000;

#[derive(Default)]
pub struct Discovery {
    /// Direct connections to cluster primaries, by address.
    primaries: HashMap<String, MultiplexedConnection>,
}

impl Discovery {
    /// Every table that has a stream, in id order.
    pub async fn tables(&mut self, store: &Store) -> Result<BTreeSet<String>, StoreError> {
        let patterns = store.keys.events_patterns();
        let mut keys = Vec::new();
        if store.is_cluster() {
            let addrs = primaries(store).await?;
            self.primaries.retain(|a, _| addrs.contains(a));
            for addr in addrs {
                let conn = match self.primaries.get(&addr) {
                    Some(c) => c.clone(),
                    None => {
                        let url = node_url(&store.urls(), &addr);
                        let client =
                            redis::Client::open(url.as_str()).map_err(StoreError::Config)?;
                        let c = client
                            .get_multiplexed_async_connection()
                            .await
                            .map_err(StoreError::from_redis)?;
                        self.primaries.insert(addr.clone(), c.clone());
                        c
                    }
                };
                let mut conn = conn;
                for pattern in &patterns {
                    if let Err(e) = scan(&mut conn, pattern, &mut keys).await {
                        self.primaries.remove(&addr);
                        return Err(e);
                    }
                }
            }
        } else {
            let mut conn: Conn = store.conn();
            for pattern in &patterns {
                scan(&mut conn, pattern, &mut keys).await?;
            }
        }
        Ok(keys
            .iter()
            .filter_map(|k| store.keys.table_of_events(k))
            .collect())
    }
}

async fn scan<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    pattern: &str,
    out: &mut Vec<String>,
) -> Result<(), StoreError> {
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .arg("TYPE")
            .arg("stream")
            .query_async(conn)
            .await
            .map_err(StoreError::from_redis)?;
        out.extend(batch);
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// `host:port` of every primary that is not failing.
async fn primaries(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut conn = store.conn();
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(parse_primaries(&nodes))
}

/// The primaries' `host:port` in `CLUSTER NODES` output.
pub fn parse_primaries(nodes: &str) -> Vec<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let _id = parts.next()?;
            let addr = parts.next()?;
            let flags = parts.next()?;
            let is_primary = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
            let host_port = addr.split(['@', ',']).next()?;
            is_primary.then(|| host_port.to_owned())
        })
        .collect()
}

/// The seed URL with another `host:port` (keeps the scheme and credentials).
fn node_url(seeds: &[String], addr: &str) -> String {
    let seed = seeds
        .first()
        .map(String::as_str)
        .unwrap_or("redis://127.0.0.1");
    match (url::Url::parse(seed), addr.rsplit_once(':')) {
        (Ok(mut u), Some((host, port))) => {
            let ok = u.set_host(Some(host)).is_ok()
                && port
                    .parse::<u16>()
                    .is_ok_and(|p| u.set_port(Some(p)).is_ok());
            if ok {
                return u.to_string();
            }
            format!("redis://{addr}")
        }
        _ => format!("redis://{addr}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,host-b master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 slave a1 0 0 1 connected
d4 127.0.0.1:7003@17003 master,fail - 0 0 3 disconnected 10923-16383
";
        assert_eq!(parse_primaries(nodes), ["127.0.0.1:7000", "127.0.0.1:7001"]);
    }

    #[test]
    fn node_urls_keep_the_seed_scheme_and_credentials() {
        let seeds = vec!["rediss://user:pw@10.0.0.1:6379".to_owned()];
        assert_eq!(
            node_url(&seeds, "10.0.0.2:7001"),
            "rediss://user:pw@10.0.0.2:7001"
        );
    }
}
