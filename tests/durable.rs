//! Durable acknowledgements (docs/protocol.md 11, `RTS_DURABLE_WRITES`)
//! against a real primary and replica: `applied` only once a replica has
//! the change, `timeout` when none confirms in time (and the resend is a
//! `duplicate`), and `aof` refused on a Redis without `WAITAOF`. These
//! tests start their own servers, so they run the same in the cluster pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::client::{change, Client};
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
