//! A sidecar process: the real `rtsync` binary on a port of its choosing
//! (`127.0.0.1:0`, read back from its "listening" log line), killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::redis_server::RedisServer;
use super::tokens::SECRET;

pub struct Sidecar {
    pub addr: SocketAddr,
    pub instance_id: String,
    child: Option<Child>,
    /// Every log line the sidecar printed, for assertions and debugging.
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Sidecar {
    /// Starts a sidecar on `redis` with extra `env` settings.
    pub async fn start(redis: &RedisServer, instance_id: &str, env: &[(&str, &str)]) -> Sidecar {
        if redis.is_cluster() {
            let mut env = env.to_vec();
            env.push(("RTS_REDIS_CLUSTER", "true"));
            return Self::start_url(&redis.url(), instance_id, &env).await;
        }
        Self::start_url(&redis.url(), instance_id, env).await
    }

    pub async fn start_url(redis_url: &str, instance_id: &str, env: &[(&str, &str)]) -> Sidecar {
        Self::spawn(redis_url, instance_id, env, &[]).await
    }

    /// Starts `rtsync sink` on `redis` (its health port is `addr`).
    pub async fn start_sink(
        redis: &RedisServer,
        instance_id: &str,
        env: &[(&str, &str)],
    ) -> Sidecar {
        let mut env = env.to_vec();
        if redis.is_cluster() {
            env.push(("RTS_REDIS_CLUSTER", "true"));
        }
        Self::start_sink_url(&redis.url(), instance_id, &env).await
    }

    /// Starts `rtsync sink` with `redis_url` (or none: Sentinel settings in
    /// `env`).
    pub async fn start_sink_url(
        redis_url: &str,
        instance_id: &str,
        env: &[(&str, &str)],
    ) -> Sidecar {
        Self::spawn(redis_url, instance_id, env, &["sink"]).await
    }

    async fn spawn(
        redis_url: &str,
        instance_id: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Sidecar {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtsync"));
        cmd.args(args);
        cmd.env_clear()
            .env("RTS_LISTEN", "127.0.0.1:0")
            .env("RTS_REDIS_URL", redis_url)
            .env("RTS_INSTANCE_ID", instance_id)
            .env("RTS_JWT_SECRET", SECRET)
            .env("RTS_API_TOKEN", "test-api-token-0123")
            .env("RTS_LOG", "info")
            // Every key a function call touches must be in its KEYS.
            .env("RTS_LUA_KEY_CHECK", "1");
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rtsync");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("\"listening\"") {
                    if let Some(addr) = line
                        .split("\"addr\":\"")
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        let _ = tx.send(addr);
                    }
                }
                if std::env::var_os("RTSYNC_TEST_LOGS").is_some() {
                    eprintln!("{line}");
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "sidecar did not start: {:?}",
                    logs.lock().map(|l| l.clone())
                )
            });
        let sidecar = Sidecar {
            addr,
            instance_id: instance_id.to_owned(),
            child: Some(child),
            logs,
        };
        super::wait_for("sidecar ready", Duration::from_secs(20), || async {
            (sidecar.get("/readyz").0 == 200).then_some(())
        })
        .await;
        sidecar
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A plain HTTP/1.0 request: (status, the whole response with its
    /// headers).
    pub fn http_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)) else {
            return (0, String::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut req = format!(
            "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        if s.write_all(req.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, out)
    }

    /// A plain HTTP/1.0 request: (status, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let (status, raw) = self.http_raw(method, path, headers, body);
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// An `/api/v1` request with the tests' API token: the status and the
    /// body as JSON (`null` when it is not JSON).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let auth = [("Authorization", "Bearer test-api-token-0123")];
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, out) = self.http(method, path, &auth, &text);
        (status, serde_json::from_str(&out).unwrap_or_default())
    }

    /// Open connections (authenticated or not), from the stats route.
    pub fn total_connections(&self) -> u64 {
        let (_, v) = self.api("GET", "/api/v1/sync/stats", &serde_json::Value::Null);
        v["data"]["totalConnections"].as_u64().unwrap_or(u64::MAX)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.http("GET", path, &[], "")
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(std::process::Child::id)
            .unwrap_or(0)
    }

    /// Sends a signal (e.g. "TERM", "KILL") to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status();
    }

    /// Waits for the process to exit; returns its exit status if it did in time.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.logs
            .lock()
            .map(|l| l.iter().any(|line| line.contains(needle)))
            .unwrap_or(false)
    }

    /// Waits (5 s deadline) for a log line containing `needle`: stderr is
    /// read by another thread, so a line can arrive after the event a test
    /// saw on its socket.
    pub async fn wait_for_log(&self, needle: &str) {
        super::wait_for(
            &format!("log line {needle:?}"),
            Duration::from_secs(5),
            || async { self.log_contains(needle).then_some(()) },
        )
        .await;
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Sidecar {
    /// Kills the process (SIGKILL) and starts it again on the same address,
    /// so its clients reconnect to the URL they know.
    pub async fn kill_and_restart(&mut self, redis: &RedisServer, env: &[(&str, &str)]) {
        self.signal("KILL");
        let _ = self.wait_exit(Duration::from_secs(10)).await;
        let addr = self.addr.to_string();
        let mut env = env.to_vec();
        env.push(("RTS_LISTEN", addr.as_str()));
        let instance = self.instance_id.clone();
        *self = Sidecar::start(redis, &instance, &env).await;
    }

    /// [`Sidecar::kill_and_restart`] for a sidecar started with
    /// [`Sidecar::start_url`] (Sentinel, a cluster with replicas).
    pub async fn kill_and_restart_url(&mut self, redis_url: &str, env: &[(&str, &str)]) {
        self.signal("KILL");
        let _ = self.wait_exit(Duration::from_secs(10)).await;
        let addr = self.addr.to_string();
        let mut env = env.to_vec();
        env.push(("RTS_LISTEN", addr.as_str()));
        let instance = self.instance_id.clone();
        *self = Sidecar::start_url(redis_url, &instance, &env).await;
    }
}
