//! A `redis-server` process of one test: free port, own directory, killed
//! on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    pub appendonly: bool,
    /// With `RTSYNC_TEST_CLUSTER=1` every test runs on a local 3-primary
    /// Redis Cluster instead of one server.
    cluster: Option<super::redis_cluster::RedisCluster>,
    /// The primary's port, for a replica.
    replica_of: Option<u16>,
}

/// The server binary every test starts: `RTS_TEST_REDIS_SERVER` (e.g. the
/// path `scripts/ensure-valkey.sh` prints, for the Valkey pass), else
/// `redis-server` from `PATH`. Sentinels run as `<binary> --sentinel`.
pub fn server_binary() -> String {
    std::env::var("RTS_TEST_REDIS_SERVER")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "redis-server".to_owned())
}

/// True when the suite runs against Redis Cluster (`RTSYNC_TEST_CLUSTER=1`).
pub fn cluster_mode() -> bool {
    std::env::var_os("RTSYNC_TEST_CLUSTER").is_some_and(|v| v == "1")
}

/// Whether the Redis answering on `port` is the process `pid` (its `INFO
/// server` says so): a port freed for one test may be taken by another's
/// server first.
pub async fn answers_as(port: u16, pid: u32) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return false;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let info: String = match redis::cmd("INFO").arg("server").query_async(&mut c).await {
        Ok(info) => info,
        Err(_) => return false,
    };
    info.lines()
        .any(|l| l.trim() == format!("process_id:{pid}"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        if cluster_mode() {
            let cluster = super::redis_cluster::RedisCluster::start().await;
            return RedisServer {
                port: cluster.ports[0],
                child: None,
                dir: std::env::temp_dir().join("rtsync-unused"),
                appendonly: false,
                cluster: Some(cluster),
                replica_of: None,
            };
        }
        Self::start_with(false).await
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// `appendonly`: persist with AOF, so a restart keeps the data.
    pub async fn start_with(appendonly: bool) -> RedisServer {
        Self::start_server(appendonly, None).await
    }

    /// A replica of `primary` (one server, never a cluster), synced.
    pub async fn start_replica_of(primary: &RedisServer) -> RedisServer {
        let replica = Self::start_server(false, Some(primary.port)).await;
        let port = replica.port;
        super::wait_for(
            "the replica in sync",
            Duration::from_secs(10),
            || async move {
                let info = super::redis_text(port, &["INFO", "replication"]).await?;
                info.contains("master_link_status:up").then_some(())
            },
        )
        .await;
        replica
    }

    async fn start_server(appendonly: bool, replica_of: Option<u16>) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "rtsync-test-redis-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        let mut server = RedisServer {
            port: 0,
            child: None,
            dir,
            appendonly,
            cluster: None,
            replica_of,
        };
        for _ in 0..5 {
            server.port = free_port();
            server.spawn();
            if server.wait_ready().await {
                return server;
            }
            server.kill();
        }
        panic!("redis-server did not start (is it installed?)");
    }

    fn spawn(&mut self) {
        let child = Command::new(server_binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", if self.appendonly { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .args(
                self.replica_of
                    .map(|p| {
                        vec![
                            "--replicaof".to_owned(),
                            "127.0.0.1".to_owned(),
                            p.to_string(),
                        ]
                    })
                    .unwrap_or_default(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "spawn {}: {e} (install redis-server, or set RTS_TEST_REDIS_SERVER)",
                    server_binary()
                )
            });
        self.child = Some(child);
    }

    /// Whether this test's own server answers on its port: another test
    /// may bind the port between `free_port` and our server's bind (ours
    /// then exits), and a PING alone would be answered by theirs.
    async fn wait_ready(&mut self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return false;
        };
        while std::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return false;
                }
            }
            if answers_as(self.port, pid).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The URL (or, on a cluster, the comma-separated seed URLs).
    pub fn url(&self) -> String {
        match &self.cluster {
            Some(c) => c.urls(),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// A connection for the test's own Redis commands (cluster-aware).
    pub async fn conn(&self) -> rtsync::store::Conn {
        if let Some(c) = &self.cluster {
            return rtsync::store::Conn::Cluster(c.conn().await);
        }
        let client = redis::Client::open(self.url()).expect("redis url");
        rtsync::store::Conn::Single(
            redis::aio::ConnectionManager::new(client)
                .await
                .expect("connect to test redis"),
        )
    }

    /// The server's `(major, minor)` Redis-compatible version (`INFO
    /// server`'s `redis_version`; Valkey reports the Redis version it
    /// matches, 7.2 for Valkey 8 and 9).
    pub async fn version(&self) -> (u32, u32) {
        let info = super::redis_text(self.port, &["INFO", "server"])
            .await
            .expect("INFO server");
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("0.0")
            .trim()
            .to_owned();
        let mut parts = version.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// Whether the server has `WAITAOF` (Redis 7.2+, Valkey 8+), which
    /// `RTS_DURABLE_WRITES=aof` needs.
    pub async fn has_waitaof(&self) -> bool {
        self.version().await >= (7, 2)
    }

    /// Kills the server (SIGKILL). Single-server tests only.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server (SIGSTOP): it keeps its connections but answers
    /// nothing until [`RedisServer::resume`]. Single-server tests only.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([format!("-{sig}"), c.id().to_string()])
                .status();
        }
    }

    /// Starts the server again on the same port and directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        assert!(self.wait_ready().await, "redis-server did not restart");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
