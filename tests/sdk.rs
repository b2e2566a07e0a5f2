//! The JavaScript client (clients/js, built to dist/) against real sidecars:
//! its behaviours (`clients/js/it/sdk.test.mjs`) and the end-to-end
//! convergence run (`clients/js/it/convergence.mjs`), for which this harness
//! injects the faults the script asks for: SIGKILL a sidecar (restarted on
//! the same port), restart Redis (AOF), and with `RTS_DURABLE_WRITES=replica`
//! a failover: SIGKILL of the primary, promoted by Sentinel or, on a cluster
//! with a replica per primary, by the cluster. Then it checks the stream:
//! every committed edit is in it exactly once, every rejected one not at all.
//!
//! Needs node and the built client (`scripts/build-client.sh`, which
//! `scripts/test.sh` runs). `RTSYNC_CONVERGENCE_MS` and `RTSYNC_SEED` set a
//! longer or different run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::redis_cluster::RedisCluster;
use support::sentinel::{SentinelSet, MASTER};
use support::tokens::{claims, hs256, now_secs};
use support::{RedisServer, Sidecar};

fn js_dir() -> PathBuf {
    support::node::dir("clients/js")
}

/// Whether the client is built (see `support::node::ready`).
fn client_built() -> bool {
    support::node::ready(
        &js_dir().join("dist/index.js"),
        "run scripts/build-client.sh",
    )
}

/// Tokens of the test users: every table read-write except `t-readonly`
/// and `conv-ro`, which they may only read; `outsider`, who may use only
/// `t-open`; and one expired token.
fn tokens() -> String {
    let mut out = serde_json::Map::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let mut c = claims(user);
        c["tables"] = json!({"*": "rw", "t-readonly": "r", "conv-ro": "r"});
        out.insert(user.into(), json!(hs256(&c)));
    }
    let mut outsider = claims("outsider");
    outsider["tables"] = json!({"t-open": "rw"});
    out.insert("outsider".into(), json!(hs256(&outsider)));
    let mut expired = claims("late");
    expired["exp"] = json!(now_secs() - 3600);
    out.insert("expired".into(), json!(hs256(&expired)));
    Value::Object(out).to_string()
}

fn urls(sidecars: &[&Sidecar]) -> String {
    sidecars
        .iter()
        .map(|s| s.ws_url())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_behaviours_against_real_sidecars() {
    if !client_built() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "sdk-a", &[]).await;
    let b = Sidecar::start(&redis, "sdk-b", &[]).await;
    let (urls, tokens) = (urls(&[&a, &b]), tokens());
    let env = vec![("RTSYNC_URLS", urls), ("RTSYNC_TOKENS", tokens)];
    let passed = support::node::run_tests(js_dir(), &["it/sdk.test.mjs"], env).await;
    assert!(passed, "SDK tests failed");
    drop((a, b));
}

/// The Redis a convergence run uses and faults: one server (or, in the
/// cluster pass, a cluster without replicas), a Sentinel set, or a cluster
/// with a replica per primary. The last two run with
/// `RTS_DURABLE_WRITES=replica` and fault a failover.
enum Deployment {
    One(RedisServer),
    Sentinel(SentinelSet),
    Cluster(RedisCluster),
}

/// Sidecar settings for durable writes in a failover run.
const DURABLE: [(&str, &str); 2] = [
    ("RTS_DURABLE_WRITES", "replica"),
    ("RTS_DURABLE_TIMEOUT_MS", "500"),
];

impl Deployment {
    /// The sidecars' `RTS_REDIS_URL` and extra settings.
    fn sidecar_settings(&self) -> (String, Vec<(&'static str, String)>) {
        let mut env: Vec<(&'static str, String)> =
            DURABLE.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        match self {
            Deployment::One(redis) => {
                env.clear();
                if redis.is_cluster() {
                    env.push(("RTS_REDIS_CLUSTER", "true".into()));
                }
                (redis.url(), env)
            }
            Deployment::Sentinel(set) => {
                env.push(("RTS_REDIS_SENTINELS", set.addrs()));
                env.push(("RTS_REDIS_MASTER_NAME", MASTER.into()));
                ("redis://127.0.0.1:1".into(), env)
            }
            Deployment::Cluster(cluster) => {
                env.push(("RTS_REDIS_CLUSTER", "true".into()));
                (cluster.urls(), env)
            }
        }
    }

    async fn sidecar(&self, name: &str) -> Sidecar {
        let (url, env) = self.sidecar_settings();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Sidecar::start_url(&url, name, &env).await
    }

    async fn restart_sidecar(&self, side: &mut Sidecar) {
        let (url, env) = self.sidecar_settings();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        side.kill_and_restart_url(&url, &env).await;
    }

    /// Runs a fault on Redis itself: `restart-redis` (one server, AOF) or
    /// `failover` (SIGKILL of the primary holding the tables, then a
    /// replica promoted; on a cluster the old primary comes back as a
    /// replica, so durable commits are confirmed again).
    async fn redis_fault(&mut self, kind: &str) {
        match (self, kind) {
            (Deployment::One(redis), "restart-redis") => redis.restart().await,
            (Deployment::Sentinel(set), "failover") => {
                let old = set.primary_port().await.expect("a primary");
                set.server(old).kill();
                let new = set.wait_for_new_primary(old, Duration::from_secs(30)).await;
                eprintln!("[harness] Sentinel promoted {new} after {old} was killed");
            }
            (Deployment::Cluster(cluster), "failover") => {
                let mut node = cluster.node(cluster.ports[0]).await;
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg("{conv}")
                    .query_async(&mut node)
                    .await
                    .expect("KEYSLOT");
                let old = cluster
                    .slot_primary(cluster.ports[0], slot)
                    .await
                    .expect("owner");
                let via = *cluster
                    .ports
                    .iter()
                    .find(|p| **p != old)
                    .expect("another node");
                cluster.kill_node(old);
                support::wait_for("a replica promoted", Duration::from_secs(30), || async {
                    cluster.slot_primary(via, slot).await.filter(|p| *p != old)
                })
                .await;
                cluster.restart_node(old).await;
            }
            (_, other) => panic!("fault {other} does not apply to this deployment"),
        }
    }

    /// A connection to the primary (or cluster) holding the data now.
    async fn conn(&self) -> rtsync::store::Conn {
        match self {
            Deployment::One(redis) => redis.conn().await,
            Deployment::Sentinel(set) => {
                let port = set.primary_port().await.expect("a primary");
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
                rtsync::store::Conn::Single(
                    redis::aio::ConnectionManager::new(client).await.unwrap(),
                )
            }
            Deployment::Cluster(cluster) => rtsync::store::Conn::Cluster(cluster.conn().await),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_live_table_converges_under_faults() {
    if !client_built() {
        return;
    }
    let redis = if support::redis_server::cluster_mode() {
        RedisServer::start().await
    } else {
        RedisServer::start_with(true).await
    };
    // Redis restarts only where there is one Redis to restart.
    let faults = if redis.is_cluster() {
        "kill-sidecar-0,drop-all,kill-sidecar-1"
    } else {
        "kill-sidecar-0,restart-redis,kill-sidecar-1,restart-redis"
    };
    converge(Deployment::One(redis), faults).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_live_table_converges_under_a_sentinel_failover_with_durable_writes() {
    if !client_built() || support::redis_server::cluster_mode() {
        return; // it starts its own servers: once, in the main pass
    }
    let set = SentinelSet::start().await;
    converge(
        Deployment::Sentinel(set),
        "kill-sidecar-0,failover,kill-sidecar-1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_live_table_converges_under_a_cluster_failover_with_durable_writes() {
    if !client_built() || support::redis_server::cluster_mode() {
        return; // it starts its own servers: once, in the main pass
    }
    let cluster = RedisCluster::start_with_replicas(1).await;
    converge(
        Deployment::Cluster(cluster),
        "kill-sidecar-0,failover,kill-sidecar-1",
    )
    .await;
}

/// Runs clients/js/it/convergence.mjs on three sidecars of `deployment`,
/// injecting `faults` when it asks, then checks the stream: every committed
/// edit in it exactly once, every rejected one not at all (the script
/// itself checks that every edit settled and every LiveTable equals the
/// table's state).
async fn converge(mut deployment: Deployment, faults: &str) {
    // One run at a time: three at once (six clients, three sidecars and
    // their servers each) on two cores starve one another's timeouts.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut sidecars = [
        deployment.sidecar("conv-a").await,
        deployment.sidecar("conv-b").await,
        deployment.sidecar("conv-c").await,
    ];
    let summary_path = std::env::temp_dir().join(format!(
        "rtsync-convergence-{}-{}.json",
        std::process::id(),
        support::redis_server::rand_suffix()
    ));
    let duration = std::env::var("RTSYNC_CONVERGENCE_MS").unwrap_or_else(|_| "30000".into());
    let seed = std::env::var("RTSYNC_SEED").unwrap_or_else(|_| "20261125".into());
    let mut child = Command::new("node")
        .arg("it/convergence.mjs")
        .current_dir(js_dir())
        .env("RTSYNC_URLS", urls(&sidecars.iter().collect::<Vec<_>>()))
        .env("RTSYNC_TOKENS", tokens())
        .env("RTSYNC_SEED", &seed)
        .env("RTSYNC_DURATION_MS", &duration)
        .env("RTSYNC_FAULTS", faults)
        .env("RTSYNC_SUMMARY", &summary_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Serve fault requests until the script closes its stdout.
    while let Some(line) = rx.recv().await {
        let Some(kind) = line.strip_prefix("FAULT ") else {
            eprintln!("{line}");
            continue;
        };
        eprintln!("[harness] fault: {kind}");
        match kind {
            "drop-all" => {
                // Cluster: restart every sidecar at once instead.
                for s in sidecars.iter_mut() {
                    deployment.restart_sidecar(s).await;
                }
            }
            k if k.starts_with("kill-sidecar-") => {
                let i: usize = k["kill-sidecar-".len()..].parse().expect("sidecar index");
                deployment.restart_sidecar(&mut sidecars[i]).await;
            }
            other => deployment.redis_fault(other).await,
        }
        let _ = writeln!(stdin, "OK");
        let _ = stdin.flush();
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait node");
    assert!(
        status.success(),
        "the convergence run failed (see its output)"
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_path).expect("summary"))
        .expect("summary json");
    let _ = std::fs::remove_file(&summary_path);
    check_stream(&mut deployment.conn().await, &summary).await;
}

/// Every committed edit of `summary` is in the stream exactly once; a
/// rejected one never.
async fn check_stream(conn: &mut rtsync::store::Conn, summary: &Value) {
    let mut in_stream: HashMap<String, usize> = HashMap::new();
    for table in ["conv", "conv-ro"] {
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(format!("rts:{{{table}}}:events"))
            .arg("-")
            .arg("+")
            .query_async(conn)
            .await
            .expect("XRANGE");
        for (_, fields) in rtsync::store::tailer::entries(reply) {
            if let Some((_, v)) = fields.iter().find(|(k, _)| k == "clientChangeId") {
                *in_stream
                    .entry(String::from_utf8_lossy(v).into_owned())
                    .or_default() += 1;
            }
        }
    }
    let settled = summary["settled"].as_array().expect("settled edits");
    assert_eq!(settled.len() as u64, summary["made"].as_u64().unwrap());
    for edit in settled {
        let id = edit["clientChangeId"].as_str().unwrap();
        let rejected = edit["status"] == "rejected" || edit["originalStatus"] == "rejected";
        let times = in_stream.get(id).copied().unwrap_or(0);
        if rejected {
            assert_eq!(times, 0, "rejected edit {edit} is not in the stream");
        } else {
            assert_eq!(times, 1, "committed edit {edit} is in the stream once");
        }
    }
    eprintln!(
        "[harness] {} edits settled, {} in the stream",
        settled.len(),
        in_stream.len()
    );
}
