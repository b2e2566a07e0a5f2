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
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        Self::start_with(false).await
    }

    /// `appendonly`: persist with AOF, so a restart keeps the data.
    pub async fn start_with(appendonly: bool) -> RedisServer {
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
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", if self.appendonly { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server: install it with `apt-get install redis-server`");
        self.child = Some(child);
    }

    async fn wait_ready(&self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let client = match redis::Client::open(self.url()) {
            Ok(c) => c,
            Err(_) => return false,
        };
        while std::time::Instant::now() < deadline {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
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
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
