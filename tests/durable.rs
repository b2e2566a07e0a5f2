//! Durable acknowledgements (docs/protocol.md 11, `RTS_DURABLE_WRITES`)
//! against a real primary and replica: `applied` only once a replica has
//! the change, `timeout` when none confirms in time (and the resend is a
//! `duplicate`), and `aof` refused on a Redis without `WAITAOF`; `aof`
//! surviving a SIGKILL (on a server with `WAITAOF`), and `replica` on a
//! Redis Cluster surviving a primary's SIGKILL. These tests start their own
//! servers, so they run the same in the cluster pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::client::{change, Client};
use support::redis_cluster::RedisCluster;
use support::{metric, stream_ids, RedisServer, Sidecar};

async fn replica_sidecar(primary: &RedisServer, name: &str, timeout_ms: &str) -> Sidecar {
    Sidecar::start_url(
        &primary.url(),
        name,
        &[
            ("RTS_DURABLE_WRITES", "replica"),
            ("RTS_DURABLE_TIMEOUT_MS", timeout_ms),
        ],
    )
    .await
}

fn with_id(mut c: Value, id: &str) -> Value {
    c["clientChangeId"] = json!(id);
    c
}

async fn replica_conn(replica: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(replica.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_mode_answers_applied_only_once_a_replica_has_the_change() {
    let primary = RedisServer::start_with(false).await;
    let replica = RedisServer::start_replica_of(&primary).await;
    let side = replica_sidecar(&primary, "dur-ok", "500").await;
    let mut c = Client::connect(&side, "alice").await;
    let mut on_replica = replica_conn(&replica).await;
    for i in 0..20 {
        let r = c
            .request_ok("record_change", change("dur", "r1", "f", json!(i)))
            .await;
        assert_eq!(r["status"], "applied");
        // Read from the replica right after the ack: the entry is there.
        let ids = stream_ids(&mut on_replica, "dur").await;
        assert_eq!(
            ids.last().map(String::as_str),
            r["eventId"].as_str(),
            "commit {i}"
        );
    }
    let text = side.get("/metrics").1;
    assert!(metric(&text, "rtsync_durable_wait_seconds_count") >= 20.0);
    assert_eq!(metric(&text, "rtsync_durable_unconfirmed_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_replica_makes_commits_timeout_and_the_resend_after_it_is_a_duplicate() {
    let primary = RedisServer::start_with(false).await;
    let replica = RedisServer::start_replica_of(&primary).await;
    let side = replica_sidecar(&primary, "dur-pause", "300").await;
    let mut c = Client::connect(&side, "alice").await;
    c.request_ok(
        "record_change",
        with_id(change("dur", "r1", "f", json!(0)), "c0"),
    )
    .await;
    replica.pause();
    let started = Instant::now();
    let err = c
        .request(
            "record_change",
            with_id(change("dur", "r1", "f", json!(1)), "c1"),
        )
        .await
        .expect_err("no replica confirms");
    let took = started.elapsed();
    replica.resume();
    assert_eq!(err["code"], "timeout", "{err}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "answered after about the timeout: {took:?}"
    );
    // The change is in the primary; once the replica is back, the resend
    // with the same clientChangeId is a duplicate, written once.
    let again = c
        .request_ok(
            "record_change",
            with_id(change("dur", "r1", "f", json!(1)), "c1"),
        )
        .await;
    assert_eq!(again["status"], "duplicate");
    let mut conn = primary.conn().await;
    assert_eq!(stream_ids(&mut conn, "dur").await.len(), 2, "written once");
    let text = side.get("/metrics").1;
    assert!(metric(&text, "rtsync_durable_unconfirmed_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_mode_without_any_replica_answers_timeout_and_says_so_at_start() {
    let primary = RedisServer::start_with(false).await;
    let side = replica_sidecar(&primary, "dur-none", "100").await;
    side.wait_for_log("no connected replica").await;
    let mut c = Client::connect(&side, "alice").await;
    let err = c
        .request("record_change", change("dur", "r1", "f", json!(1)))
        .await
        .expect_err("nothing confirms");
    assert_eq!(err["code"], "timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn none_is_todays_behaviour_without_a_wait() {
    let primary = RedisServer::start_with(false).await;
    let side = Sidecar::start_url(&primary.url(), "dur-default", &[]).await;
    let mut c = Client::connect(&side, "alice").await;
    let r = c
        .request_ok("record_change", change("dur", "r1", "f", json!(1)))
        .await;
    assert_eq!(r["status"], "applied");
    let text = side.get("/metrics").1;
    assert_eq!(metric(&text, "rtsync_durable_wait_seconds_count"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn aof_mode_refuses_to_start_on_a_redis_without_waitaof_naming_its_version() {
    let primary = RedisServer::start_with(false).await;
    let mut conn = primary.conn().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap()
        .trim()
        .to_owned();
    let (major, minor) = {
        let mut p = version.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
        (p.next().unwrap_or(0), p.next().unwrap_or(0))
    };
    if (major, minor) >= (7, 2) {
        // A newer server has WAITAOF (the sidecar would start and run);
        // this check is for older ones.
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rtsync"))
        .env_clear()
        .env("RTS_LISTEN", "127.0.0.1:0")
        .env("RTS_REDIS_URL", primary.url())
        .env("RTS_AUTH", "none")
        .env("RTS_DURABLE_WRITES", "aof")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("Redis 7.2 or newer"), "{stderr}");
    assert!(
        stderr.contains(&version),
        "names the server's version: {stderr}"
    );
}

/// A primary persisting every write to its AOF before answering
/// (`appendonly yes`, `appendfsync always`) and a sidecar with
/// `RTS_DURABLE_WRITES=aof`; `None` (the test is skipped, saying why) on a
/// server without `WAITAOF`: the Valkey pass of scripts/test.sh has one.
async fn aof_primary(name: &str) -> Option<(RedisServer, Sidecar)> {
    let primary = RedisServer::start_with(true).await;
    if !primary.has_waitaof().await {
        eprintln!(
            "SKIPPED: RTS_DURABLE_WRITES=aof needs WAITAOF (Redis 7.2+ or Valkey); this server is {:?}. \
             Run with RTS_TEST_REDIS_SERVER=$(scripts/ensure-valkey.sh)",
            primary.version().await
        );
        return None;
    }
    let side = Sidecar::start_url(
        &primary.url(),
        name,
        &[
            ("RTS_DURABLE_WRITES", "aof"),
            ("RTS_DURABLE_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    Some((primary, side))
}

#[tokio::test(flavor = "multi_thread")]
async fn aof_mode_acknowledged_changes_and_their_dedup_keys_survive_a_sigkill_and_restart() {
    let Some((mut primary, side)) = aof_primary("dur-aof").await else {
        return;
    };
    let mut c = Client::connect(&side, "alice").await;
    let mut acked = Vec::new();
    for i in 0..30 {
        let id = format!("a{i}");
        let r = c
            .request_ok(
                "record_change",
                with_id(change("aof", &format!("r{}", i % 4), "f", json!(i)), &id),
            )
            .await;
        assert_eq!(r["status"], "applied", "{r}");
        acked.push((id, r["eventId"].as_str().unwrap().to_owned()));
    }
    // SIGKILL right after the last acknowledgement, then start again from
    // the AOF on the same directory and port.
    primary.restart().await;
    let mut conn = primary.conn().await;
    let ids = stream_ids(&mut conn, "aof").await;
    for (cc, event) in &acked {
        assert!(ids.contains(event), "{cc} acknowledged as {event} but lost");
    }
    assert_eq!(ids.len(), acked.len(), "nothing more, nothing less");
    // The dedup keys survived too: each resend is a duplicate of its event.
    for (cc, event) in &acked {
        let i: usize = cc[1..].parse().unwrap();
        let body = with_id(change("aof", &format!("r{}", i % 4), "f", json!(i)), cc);
        let deadline = Instant::now() + Duration::from_secs(20);
        let r = loop {
            match c.request("record_change", body.clone()).await {
                Ok(r) => break r,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no answer after the restart: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert_eq!(r["status"], "duplicate", "{cc}: {r}");
        assert_eq!(r["eventId"].as_str(), Some(event.as_str()), "{cc}: {r}");
    }
    assert_eq!(stream_ids(&mut conn, "aof").await.len(), acked.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn aof_mode_with_the_aof_turned_off_at_runtime_answers_timeout_never_applied() {
    let Some((primary, side)) = aof_primary("dur-aof-off").await else {
        return;
    };
    let mut c = Client::connect(&side, "alice").await;
    let r = c
        .request_ok("record_change", change("aof", "r1", "f", json!(0)))
        .await;
    assert_eq!(r["status"], "applied");
    let mut conn = primary.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("no")
        .query_async(&mut conn)
        .await
        .unwrap();
    for i in 1..6 {
        let err = c
            .request("record_change", change("aof", "r1", "f", json!(i)))
            .await
            .expect_err("no AOF confirms the write");
        assert_eq!(err["code"], "timeout", "commit {i}: {err}");
    }
    let text = side.get("/metrics").1;
    assert!(metric(&text, "rtsync_durable_unconfirmed_total") >= 5.0);
}

/// Commits `clientChangeId`s `w0`, `w1`, ... to `table` until `stop`, each
/// resent (same id) until it is answered, so every change it made is
/// acknowledged; returns each id's event id.
async fn resending_writer(
    mut c: Client,
    table: &'static str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashMap<String, String>>>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("w{n}");
        let body = with_id(change(table, &format!("r{}", n % 5), "f", json!(n)), &id);
        loop {
            match c.request("record_change", body.clone()).await {
                Ok(r) => {
                    let event = r["eventId"].as_str().unwrap().to_owned();
                    acked.lock().unwrap().insert(id.clone(), event);
                    break;
                }
                Err(e) => {
                    let code = e["code"].as_str().unwrap_or("");
                    assert!(code == "timeout" || code == "unavailable", "{e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_mode_on_a_cluster_loses_no_acknowledged_change_when_a_primary_dies() {
    let mut cluster = RedisCluster::start_with_replicas(1).await;
    let side = Sidecar::start_url(
        &cluster.urls(),
        "dur-cluster",
        &[
            ("RTS_REDIS_CLUSTER", "true"),
            ("RTS_DURABLE_WRITES", "replica"),
            ("RTS_DURABLE_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    let table = "durc";
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let c = Client::connect(&side, "alice").await;
    let writer = tokio::spawn(resending_writer(c, table, stop.clone(), acked.clone()));
    support::wait_for("writes flowing", Duration::from_secs(20), || async {
        (acked.lock().unwrap().len() >= 30).then_some(())
    })
    .await;
    let mut node = cluster.node(cluster.ports[0]).await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(format!("{{{table}}}"))
        .query_async(&mut node)
        .await
        .unwrap();
    let old = cluster.slot_primary(cluster.ports[0], slot).await.unwrap();
    let via = *cluster.ports.iter().find(|p| **p != old).unwrap();
    let before_kill = acked.lock().unwrap().len();
    cluster.kill_node(old);
    support::wait_for("the replica promoted", Duration::from_secs(30), || async {
        cluster.slot_primary(via, slot).await.filter(|p| *p != old)
    })
    .await;
    // The promoted replica has no replica of its own until the old primary
    // comes back as one: only then are commits confirmed again.
    cluster.restart_node(old).await;
    support::wait_for(
        "writes after the failover",
        Duration::from_secs(30),
        || async { (acked.lock().unwrap().len() >= before_kill + 20).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let mut conn = cluster.conn().await;
    let ids = stream_ids(&mut conn, table).await;
    let acked = acked.lock().unwrap().clone();
    for (cc, event) in &acked {
        assert!(ids.contains(event), "{cc} acknowledged as {event} but lost");
    }
    assert_eq!(ids.len(), acked.len(), "every change written once");
    let text = side.get("/metrics").1;
    assert!(metric(&text, "rtsync_durable_wait_seconds_count") >= 50.0);
}

/// The port of the primary serving `table`'s slot.
async fn table_primary(cluster: &RedisCluster, table: &str) -> u16 {
    let mut node = cluster.node(cluster.ports[0]).await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(format!("{{{table}}}"))
        .query_async(&mut node)
        .await
        .unwrap();
    cluster.slot_primary(cluster.ports[0], slot).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_the_wait_goes_to_the_node_that_ran_the_commit() {
    let cluster = RedisCluster::start_with_replicas(1).await;
    let side = Sidecar::start_url(
        &cluster.urls(),
        "dur-cluster-node",
        &[
            ("RTS_REDIS_CLUSTER", "true"),
            ("RTS_DURABLE_WRITES", "replica"),
            // The longest wait allowed: the running replica must confirm
            // within it even on a loaded machine; the stopped one never does.
            ("RTS_DURABLE_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    let mut c = Client::connect(&side, "alice").await;
    // Two tables on different primaries; only one primary's replica stops.
    let (t1, mut t2) = ("durn-a", String::new());
    let p1 = table_primary(&cluster, t1).await;
    for i in 0..100 {
        let name = format!("durn-b{i}");
        if table_primary(&cluster, &name).await != p1 {
            t2 = name;
            break;
        }
    }
    let replica = cluster.replica_of(p1).await.expect("the primary's replica");
    cluster.signal_node(replica, "STOP");
    let err = c
        .request("record_change", change(t1, "r1", "f", json!(1)))
        .await
        .expect_err("its replica is stopped");
    let elsewhere = c
        .request("record_change", change(&t2, "r1", "f", json!(1)))
        .await;
    cluster.signal_node(replica, "CONT");
    assert_eq!(err["code"], "timeout", "{err}");
    assert_eq!(
        elsewhere.expect("the other primary's replica confirms")["status"],
        "applied"
    );
}
