//! Acknowledgements that survive the primary's death (docs/protocol.md 11):
//! with `RTS_DURABLE_WRITES=replica` every pipeline of commits ends with
//! `WAIT 1 <timeout>` on the same connection (one wait per pipeline, not per
//! commit); with `aof`, `WAITAOF 1 0 <timeout>`. When the wait does not
//! confirm, each commit of that pipeline is answered `timeout`: it is in the
//! primary but may be lost with it, so the client resends with the same
//! `clientChangeId` and gets `duplicate` if it survived, or commits it once
//! if it did not.
//!
//! On a Redis Cluster the wait must reach the node that ran the commit, on
//! the connection that carried it: a pipeline on the cluster connection is
//! routed whole to the primary of its slot (`WAIT` has no key, so it
//! follows the `FCALL`s) over its one connection to that node, so
//! `group_pipe` groups a cluster's commits per slot, one wait per group;
//! [`call_on_cluster`] sends one commit with its wait (a commit sent again
//! after a `MOVED`/`ASK`).
//!
//! Data flow: `commit` marks its call durable; `group_pipe` appends
//! [`Durable::wait_cmd`] to a pipeline holding a durable call and turns the
//! durable replies into [`not_confirmed`] when [`Durable::confirmed`] says
//! no. [`check_server`] runs once at start.

use std::time::Duration;

use redis::{Cmd, RedisResult, Value};

use super::{Conn, Store, StoreError};
use crate::config::Durability;

/// The durability every commit waits for.
#[derive(Clone, Copy, Debug)]
pub struct Durable {
    pub mode: Durability,
    pub timeout: Duration,
}

impl Durable {
    /// Today's behaviour: acknowledged once in the primary's memory.
    pub fn none() -> Durable {
        Durable {
            mode: Durability::None,
            timeout: Duration::ZERO,
        }
    }

    pub fn from_config(config: &crate::config::Config) -> Durable {
        Durable {
            mode: config.durable_writes,
            timeout: config.durable_timeout,
        }
    }

    /// The command that ends a pipeline of commits, if any.
    pub fn wait_cmd(&self) -> Option<Cmd> {
        let ms = self.timeout.as_millis() as u64;
        match self.mode {
            Durability::None => None,
            Durability::Replica => {
                let mut cmd = redis::cmd("WAIT");
                cmd.arg(1).arg(ms);
                Some(cmd)
            }
            Durability::Aof => {
                let mut cmd = redis::cmd("WAITAOF");
                cmd.arg(1).arg(0).arg(ms);
                Some(cmd)
            }
        }
    }

    /// Whether the reply of [`Durable::wait_cmd`] confirms the writes sent
    /// before it on its connection.
    pub fn confirmed(&self, reply: &Value) -> bool {
        match (self.mode, reply) {
            (Durability::None, _) => true,
            (Durability::Replica, Value::Int(replicas)) => *replicas >= 1,
            (Durability::Aof, Value::Array(counts)) => {
                matches!(counts.first(), Some(Value::Int(local)) if *local >= 1)
            }
            _ => false,
        }
    }
}

/// The error of a commit whose durability was not confirmed in time: a
/// timeout (outcome unknown), so the client resends.
pub fn not_confirmed(mode: Durability) -> redis::RedisError {
    let what = match mode {
        Durability::Aof => "the primary's AOF",
        _ => "a replica",
    };
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("applied, but {what} did not confirm it in time (RTS_DURABLE_WRITES)"),
    ))
}

/// Runs `cmd` (a commit) on a cluster connection followed by the wait of
/// `durable` on the same node and connection; the commit's own reply, or
/// [`not_confirmed`] when the wait does not confirm it. Without a wait
/// (`none`) it is a plain call.
pub async fn call_on_cluster(conn: &mut Conn, cmd: &Cmd, durable: Durable) -> RedisResult<Value> {
    let Some(wait) = durable.wait_cmd() else {
        return cmd.query_async(conn).await;
    };
    let mut pipe = redis::pipe();
    pipe.add_command(cmd.clone()).add_command(wait);
    let started = std::time::Instant::now();
    let mut values: Vec<Value> = pipe.query_async(conn).await?;
    let (Some(wait_reply), Some(reply), None) = (values.pop(), values.pop(), values.pop()) else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "a commit and its wait did not answer two replies",
        )));
    };
    let confirmed = durable.confirmed(&wait_reply);
    crate::metrics::durable_wait(started.elapsed(), confirmed);
    if !confirmed {
        tracing::warn!(reply = ?wait_reply, "a commit on the cluster was not confirmed durable in time; answering timeout");
        return Err(not_confirmed(durable.mode));
    }
    Ok(reply)
}

/// Why the server cannot give the durability asked for.
#[derive(Debug, thiserror::Error)]
pub enum DurabilityError {
    #[error("RTS_DURABLE_WRITES=aof needs WAITAOF, Redis 7.2 or newer; the server is Redis {0}")]
    OldServer(String),
    #[error("cannot check the Redis version for RTS_DURABLE_WRITES: {0}")]
    Unreadable(#[from] StoreError),
}

/// Checks once, at start, that the server can give `durable`: `aof` needs
/// Redis ≥ 7.2 (the sidecar refuses to start otherwise); `replica` without
/// a connected replica is logged, since every commit will then answer
/// `timeout` until one connects.
pub async fn check_server(store: &Store, durable: Durable) -> Result<(), DurabilityError> {
    if durable.mode == Durability::None {
        return Ok(());
    }
    let info = server_info(store).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let version = field("redis_version").unwrap_or("unknown").to_owned();
    if durable.mode == Durability::Aof && !at_least(&version, (7, 2)) {
        return Err(DurabilityError::OldServer(version));
    }
    if durable.mode == Durability::Replica && field("connected_slaves") == Some("0") {
        tracing::warn!(
            "RTS_DURABLE_WRITES=replica but the primary has no connected replica: commits answer timeout until one connects"
        );
    }
    Ok(())
}

/// `INFO` of the primary; on a cluster, of one primary (asked at random:
/// the nodes of one cluster run one version, and a primary without a
/// replica is worth the warning whichever it is).
async fn server_info(store: &Store) -> Result<String, StoreError> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let mut cmd = redis::cmd("INFO");
    cmd.arg("server").arg("replication");
    let reply = match store.conn() {
        Conn::Cluster(mut c) => {
            let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
            c.route_command(cmd, to).await
        }
        mut single => cmd.query_async(&mut single).await,
    };
    let value = reply.map_err(StoreError::from_redis)?;
    redis::from_redis_value(value).map_err(|e| StoreError::from_redis(e.into()))
}

/// Whether `version` (`major.minor.patch`) is at least `(major, minor)`.
fn at_least(version: &str, min: (u64, u64)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_then_minor() {
        assert!(!at_least("7.0.15", (7, 2)));
        assert!(at_least("7.2.0", (7, 2)));
        assert!(at_least("8.0.1", (7, 2)));
        assert!(!at_least("garbage", (7, 2)));
    }

    #[test]
    fn a_wait_confirms_with_one_replica_and_waitaof_with_the_local_fsync() {
        let replica = Durable {
            mode: Durability::Replica,
            timeout: Duration::from_millis(5),
        };
        assert!(replica.confirmed(&Value::Int(1)));
        assert!(!replica.confirmed(&Value::Int(0)));
        let aof = Durable {
            mode: Durability::Aof,
            timeout: Duration::from_millis(5),
        };
        assert!(aof.confirmed(&Value::Array(vec![Value::Int(1), Value::Int(0)])));
        assert!(!aof.confirmed(&Value::Array(vec![Value::Int(0), Value::Int(0)])));
        assert!(!aof.confirmed(&Value::Int(1)));
    }

    #[test]
    fn an_unconfirmed_commit_is_a_timeout() {
        let e = StoreError::classify(not_confirmed(Durability::Replica));
        assert!(matches!(e, StoreError::Timeout(_)), "{e:?}");
    }
}
