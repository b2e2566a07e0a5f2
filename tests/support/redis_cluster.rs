//! A local 3-primary Redis Cluster for one test: three `redis-server
//! --cluster-enabled yes` processes on free ports, joined with
//! `redis-cli --cluster create`, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        Self::start_with_replicas(0).await
    }

    /// A 3-primary cluster with `replicas` replicas per primary (the
    /// primaries are `ports[..3]`).
    pub async fn start_with_replicas(replicas: usize) -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "rtsync-test-cluster-{}-{}",
            std::process::id(),
            super::redis_server::rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for _ in 0..3 * (1 + replicas) {
            let (port, child) = spawn_node(&cluster.dir).await;
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for port in cluster.ports.clone() {
            super::wait_for("cluster state ok", Duration::from_secs(20), || async move {
                let info = super::redis_text(port, &["CLUSTER", "INFO"]).await?;
                info.contains("cluster_state:ok").then_some(())
            })
            .await;
            // A replica counts once it has synced: only then can it take over.
            super::wait_for("replicas in sync", Duration::from_secs(20), || async move {
                let info = super::redis_text(port, &["INFO", "replication"]).await?;
                (info.contains("role:master") || info.contains("master_link_status:up"))
                    .then_some(())
            })
            .await;
        }
        cluster
    }

    /// The ports of the primaries the cluster was created with (the first
    /// three: `redis-cli --cluster create` makes them primaries).
    pub fn primaries(&self) -> &[u16] {
        &self.ports[..self.ports.len().min(3)]
    }

    /// Comma-separated seed URLs (`RTS_REDIS_URL` with `RTS_REDIS_CLUSTER=true`).
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub async fn conn(&self) -> ClusterConnection {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        ClusterClient::new(nodes)
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("connect to the test cluster")
    }

    /// SIGKILLs the node on `port`.
    pub fn kill_node(&mut self, port: u16) {
        if let Some(i) = self.ports.iter().position(|p| *p == port) {
            let _ = self.children[i].kill();
            let _ = self.children[i].wait();
        }
    }

    /// Sends `sig` (`STOP`, `CONT`) to the node on `port`: a stopped node
    /// keeps its connections but answers nothing.
    pub fn signal_node(&self, port: u16, sig: &str) {
        if let Some(i) = self.ports.iter().position(|p| *p == port) {
            let _ = Command::new("kill")
                .args([format!("-{sig}"), self.children[i].id().to_string()])
                .status();
        }
    }

    /// The port of the replica of the primary on `port`.
    pub async fn replica_of(&self, port: u16) -> Option<u16> {
        let info = super::redis_text(port, &["INFO", "replication"]).await?;
        info.lines()
            .find(|l| l.starts_with("slave0:"))?
            .split(',')
            .find_map(|kv| kv.strip_prefix("port="))?
            .parse()
            .ok()
    }

    /// Starts the (killed) node on `port` again from its directory: it
    /// rejoins the cluster, as a replica of whichever node took its slots,
    /// and is back once it has synced.
    pub async fn restart_node(&mut self, port: u16) {
        let Some(i) = self.ports.iter().position(|p| *p == port) else {
            return;
        };
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
        self.children[i] = node_process(&self.dir.join(port.to_string()), port);
        super::wait_for(
            "the restarted node synced as a replica",
            Duration::from_secs(30),
            || async move {
                let info = super::redis_text(port, &["INFO", "replication"]).await?;
                info.contains("master_link_status:up").then_some(())
            },
        )
        .await;
    }

    /// The port of the primary that serves `slot` now, asked of `via`.
    pub async fn slot_primary(&self, via: u16, slot: u16) -> Option<u16> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{via}")).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        let shards: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut c)
            .await
            .ok()?;
        let redis::Value::Array(ranges) = shards else {
            return None;
        };
        for r in ranges {
            let redis::Value::Array(parts) = r else {
                continue;
            };
            let (
                Some(redis::Value::Int(lo)),
                Some(redis::Value::Int(hi)),
                Some(redis::Value::Array(primary)),
            ) = (parts.first(), parts.get(1), parts.get(2))
            else {
                continue;
            };
            if (*lo..=*hi).contains(&i64::from(slot)) {
                if let Some(redis::Value::Int(port)) = primary.get(1) {
                    return u16::try_from(*port).ok();
                }
            }
        }
        None
    }

    /// A plain connection to one node.
    pub async fn node(&self, port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to node")
    }
}

/// A port whose cluster bus port (port + 10000) is free too: a node needs
/// both, and a busy bus port makes `redis-server` exit at start.
fn free_node_port() -> u16 {
    loop {
        let port = super::redis_server::free_port();
        if port < 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Starts one cluster node and waits for it to answer as itself. Another test may take a
/// port between our check and the node's bind, so a node that exits or
/// does not answer is replaced on a fresh port, a few times.
async fn spawn_node(dir: &std::path::Path) -> (u16, Child) {
    for _ in 0..5 {
        let port = free_node_port();
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let mut child = node_process(&node_dir, port);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            if super::redis_server::answers_as(port, child.id()).await {
                return (port, child);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no cluster node started after 5 tries (is redis-server installed?)");
}

/// The process of the cluster node on `port` with its files (its
/// `nodes.conf`) in `node_dir`: started again there, it rejoins the cluster.
fn node_process(node_dir: &std::path::Path, port: u16) -> Child {
    Command::new(super::redis_server::server_binary())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args(["--cluster-node-timeout", "2000"])
        // Replicas sync at once (the default waits 5 s for more).
        .args(["--repl-diskless-sync-delay", "0"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(node_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for port in self.ports.clone() {
            self.signal_node(port, "CONT");
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
