//! A primary, two replicas and three `redis-server --sentinel` processes
//! watching them (down-after 1 s), on free ports, for failover tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::redis_server::{free_port, rand_suffix, RedisServer};

pub const MASTER: &str = "rtsync-test";

pub struct SentinelSet {
    /// Every data server, the first one the primary at start.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<Child>,
    pub sentinel_ports: Vec<u16>,
    dir: PathBuf,
}

impl SentinelSet {
    pub async fn start() -> SentinelSet {
        let primary = RedisServer::start_with(false).await;
        let r1 = RedisServer::start_replica_of(&primary).await;
        let r2 = RedisServer::start_replica_of(&primary).await;
        let dir = std::env::temp_dir().join(format!(
            "rtsync-test-sentinel-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        let mut set = SentinelSet {
            servers: vec![primary, r1, r2],
            sentinels: Vec::new(),
            sentinel_ports: Vec::new(),
            dir,
        };
        for i in 0..3 {
            let port = free_port();
            let conf = set.dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 5000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir = set.dir.display(),
                    primary = set.servers[0].port,
                ),
            )
            .expect("sentinel config");
            let child = Command::new(super::redis_server::server_binary())
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server --sentinel");
            set.sentinels.push(child);
            set.sentinel_ports.push(port);
        }
        // Ready: every Sentinel knows both replicas and the other Sentinels.
        for port in set.sentinel_ports.clone() {
            super::wait_for(
                "a Sentinel sees the whole set",
                Duration::from_secs(20),
                || async move {
                    let mut c = sentinel_conn(port).await?;
                    let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("replicas")
                        .arg(MASTER)
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    let sentinels: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("sentinels")
                        .arg(MASTER)
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    (replicas.len() == 2 && sentinels.len() == 2).then_some(())
                },
            )
            .await;
        }
        set
    }

    /// `RTS_REDIS_SENTINELS` for this set.
    pub fn addrs(&self) -> String {
        self.sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the primary the Sentinels name now.
    pub async fn primary_port(&self) -> Option<u16> {
        for port in &self.sentinel_ports {
            let Some(mut c) = sentinel_conn(*port).await else {
                continue;
            };
            let addr: Option<(String, String)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER)
                .query_async(&mut c)
                .await
                .ok()?;
            if let Some((_, p)) = addr {
                return p.parse().ok();
            }
        }
        None
    }

    /// The data server on `port`.
    pub fn server(&mut self, port: u16) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("a server of the set")
    }

    /// Waits until the Sentinels name a primary other than `old`.
    pub async fn wait_for_new_primary(&self, old: u16, timeout: Duration) -> u16 {
        super::wait_for("Sentinel to promote a replica", timeout, || async {
            self.primary_port().await.filter(|p| *p != old)
        })
        .await
    }
}

async fn sentinel_conn(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_multiplexed_async_connection()
        .await
        .ok()
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for c in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
