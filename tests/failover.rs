//! Redis failover through Sentinel (docs/protocol.md 11) against real
//! processes: a primary, two replicas and three Sentinels. The sidecars
//! find the primary through Sentinel and follow it when it is SIGKILLed;
//! with `RTS_DURABLE_WRITES=replica` every acknowledged change survives,
//! once. These tests start their own servers (no cluster).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::client::{change, Client};
use support::receiver::Receiver;
use support::sentinel::{SentinelSet, MASTER};
use support::{metric, stream_ids, Sidecar};

async fn sentinel_sidecar(set: &SentinelSet, name: &str) -> Sidecar {
    Sidecar::start_url(
        "redis://127.0.0.1:1",
        name,
        &[
            ("RTS_REDIS_SENTINELS", &set.addrs()),
            ("RTS_REDIS_MASTER_NAME", MASTER),
            ("RTS_DURABLE_WRITES", "replica"),
            ("RTS_RATE_LIMIT", "100000"),
        ],
    )
    .await
}

/// Commits `clientChangeId`s `w-0`, `w-1`, ... until `stop`, each resent
/// (same id) until it is answered; records each id's event id and when the
/// first answer after `killed_at` came.
async fn writer(
    side_url: Sidecar,
    user: &'static str,
    table: &'static str,
    stop: Arc<Mutex<bool>>,
    acked: Arc<Mutex<HashMap<String, String>>>,
    resumed: Arc<Mutex<Vec<Instant>>>,
) -> Sidecar {
    let mut c = Client::connect(&side_url, user).await;
    let mut n = 0;
    while !*stop.lock().unwrap() {
        let id = format!("{user}-{n}");
        let mut body = change(table, &format!("r{}", n % 5), "f", json!(n));
        body["clientChangeId"] = json!(id);
        loop {
            match c.request("record_change", body.clone()).await {
                Ok(r) => {
                    let event = r["eventId"].as_str().unwrap_or_default().to_owned();
                    assert!(
                        ["applied", "merged", "overwritten", "duplicate"]
                            .contains(&r["status"].as_str().unwrap_or("")),
                        "{r}"
                    );
                    acked.lock().unwrap().insert(id.clone(), event);
                    resumed.lock().unwrap().push(Instant::now());
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
    side_url
}

#[allow(clippy::too_many_lines)] // one scenario, end to end (predates the 80-line rule)
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_primary_is_followed_and_every_acknowledged_change_survives_once() {
    let mut set = SentinelSet::start().await;
    let a = sentinel_sidecar(&set, "fo-a").await;
    let b = sentinel_sidecar(&set, "fo-b").await;
    let table = "fo";
    let mut sub = Client::connect(&b, "watcher").await;
    sub.request_ok(
        "subscribe_to_table",
        json!({"tableId": table, "viewId": "v"}),
    )
    .await;

    let stop = Arc::new(Mutex::new(false));
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = [(a, "alice"), (b, "bob")]
        .into_iter()
        .map(|(side, user)| {
            tokio::spawn(writer(
                side,
                user,
                table,
                stop.clone(),
                acked.clone(),
                answers.clone(),
            ))
        })
        .collect();
    support::wait_for("writes flowing", Duration::from_secs(20), || async {
        (acked.lock().unwrap().len() >= 20).then_some(())
    })
    .await;
    let old = set.primary_port().await.unwrap();
    let killed_at = Instant::now();
    set.server(old).kill();
    let new = set.wait_for_new_primary(old, Duration::from_secs(30)).await;
    // Writes resume on the new primary within 15 s of the kill.
    support::wait_for(
        "a commit after the failover",
        Duration::from_secs(20),
        || async {
            answers
                .lock()
                .unwrap()
                .iter()
                .any(|t| *t > killed_at + Duration::from_millis(1500))
                .then_some(())
        },
    )
    .await;
    let first_after = answers
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t > killed_at + Duration::from_millis(1500))
        .min()
        .copied()
        .unwrap();
    let took = first_after - killed_at;
    eprintln!("failover: SIGKILL of the primary to the first commit answered after it: {took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    support::wait_for(
        "writes on the new primary",
        Duration::from_secs(20),
        || async {
            (answers
                .lock()
                .unwrap()
                .iter()
                .filter(|t| **t >= first_after)
                .count()
                >= 20)
                .then_some(())
        },
    )
    .await;
    *stop.lock().unwrap() = true;
    let mut sides = Vec::new();
    for w in writers {
        sides.push(w.await.unwrap());
    }

    // Every acknowledged change is in the new primary's stream, once.
    let client = redis::Client::open(format!("redis://127.0.0.1:{new}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ids = stream_ids(&mut conn, table).await;
    let in_stream: HashSet<&String> = ids.iter().collect();
    assert_eq!(in_stream.len(), ids.len());
    let acked = acked.lock().unwrap().clone();
    for (cc, event) in &acked {
        assert!(
            in_stream.contains(event),
            "{cc} acknowledged as {event} but lost"
        );
    }
    assert_eq!(ids.len(), acked.len(), "every change written once");

    // The subscriber on the other sidecar got every entry of the new
    // primary's stream, once.
    let got = sub.changes(ids.len(), Duration::from_secs(20)).await;
    let got_ids: Vec<String> = got
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = got_ids.iter().collect();
    assert_eq!(unique.len(), got_ids.len(), "no event twice");
    for id in &ids {
        assert!(unique.contains(id), "{id} never reached the subscriber");
    }
    let (status, stats) = sides[1].api("GET", "/api/v1/sync/stats", &Value::Null);
    assert_eq!(status, 200);
    assert_eq!(
        stats["data"]["redisPrimary"],
        format!("redis://127.0.0.1:{new}"),
        "{stats}"
    );
    let text = sides[1].get("/metrics").1;
    assert!(metric(&text, "rtsync_redis_failovers_total") >= 1.0);
}

/// Without durable writes, a failover to a lagging replica loses the last
/// entries. A client that saw them is ahead of the new stream: it is told
/// `stream_reset` and reloads, and the table goes on on the new primary.
#[allow(clippy::too_many_lines)] // one scenario, end to end (predates the 80-line rule)
#[tokio::test(flavor = "multi_thread")]
async fn a_client_ahead_of_the_promoted_replicas_stream_is_told_stream_reset() {
    let mut set = SentinelSet::start().await;
    let side = Sidecar::start_url(
        "redis://127.0.0.1:1",
        "fo-lag",
        &[
            ("RTS_REDIS_SENTINELS", &set.addrs()),
            ("RTS_REDIS_MASTER_NAME", MASTER),
        ],
    )
    .await;
    let table = "fo-lag";
    let mut watcher = Client::connect(&side, "watcher").await;
    watcher
        .request_ok(
            "subscribe_to_table",
            json!({"tableId": table, "viewId": "v"}),
        )
        .await;
    let mut w = Client::connect(&side, "writer").await;
    for i in 0..3 {
        w.request_ok("record_change", change(table, "r1", "f", json!(i)))
            .await;
    }
    let old = set.primary_port().await.unwrap();
    let replicas: Vec<u16> = set
        .servers
        .iter()
        .map(|s| s.port)
        .filter(|p| *p != old)
        .collect();
    // The replicas lag on purpose: paused, and cut off from the primary
    // (their sockets closed), these three commits reach the primary only.
    for p in &replicas {
        set.server(*p).pause();
    }
    let primary = redis::Client::open(format!("redis://127.0.0.1:{old}")).unwrap();
    let mut on_primary = primary.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query_async(&mut on_primary)
        .await
        .unwrap();
    for i in 3..6 {
        let mut body = change(table, "r1", "f", json!(i));
        body["clientChangeId"] = json!(format!("lost-{i}"));
        w.request_ok("record_change", body).await;
    }
    let seen = watcher.changes(6, Duration::from_secs(10)).await;
    assert_eq!(seen.len(), 6);
    let last_seen = seen[5]["id"].as_str().unwrap().to_owned();
    set.server(old).kill();
    for p in &replicas {
        set.server(*p).resume();
    }
    let new = set.wait_for_new_primary(old, Duration::from_secs(30)).await;
    // A new commit once the sidecar follows the new primary.
    support::wait_for(
        "a commit on the new primary",
        Duration::from_secs(20),
        || async {
            let mut w = Client::connect(&side, "writer2").await;
            w.request("record_change", change(table, "r2", "f", json!("after")))
                .await
                .ok()
        },
    )
    .await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{new}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ids = stream_ids(&mut conn, table).await;
    assert!(
        !ids.contains(&last_seen),
        "the promoted replica lacks the last entries"
    );
    // The connection that stayed sees the new primary's new entries live:
    // its sidecar's group there is behind the lost entries, not stuck.
    let (_, after, _) = watcher
        .take(|(e, d, _)| e == "record_change" && d["entityId"] == "r2")
        .await
        .expect("the commit after the failover reaches the subscriber");
    assert!(ids.contains(&after["id"].as_str().unwrap().to_owned()));
    // A change lost with the old primary took its dedup key with it: its
    // resend is written (once), not answered `duplicate` of nothing.
    let mut resend = change(table, "r1", "f", json!(5));
    resend["clientChangeId"] = json!("lost-5");
    let mut w = Client::connect(&side, "writer").await;
    let first = w.request_ok("record_change", resend.clone()).await;
    assert_ne!(first["status"], "duplicate", "{first}");
    let again = w.request_ok("record_change", resend).await;
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["eventId"], first["eventId"]);
    // The client that saw them reconnects and recovers from its position.
    let mut again = Client::connect(&side, "watcher").await;
    let ack = again
        .request_ok(
            "subscribe_to_table",
            json!({"tableId": table, "viewId": "v", "lastEventId": last_seen}),
        )
        .await;
    assert_eq!(ack["resyncRequired"], "stream_reset", "{ack}");
    let resync = again.expect_event("resync_required").await;
    assert_eq!(resync["reason"], "stream_reset");
}

/// The sink finds the primary through Sentinel too, follows the failover,
/// and delivers every entry of the new primary's stream.
#[tokio::test(flavor = "multi_thread")]
async fn the_sink_follows_the_failover_and_delivers_every_surviving_entry() {
    let mut set = SentinelSet::start().await;
    let side = sentinel_sidecar(&set, "fo-sink-side").await;
    let receiver = Receiver::ok().await;
    let addrs = set.addrs();
    let _sink = Sidecar::start_sink_url(
        "redis://127.0.0.1:1",
        "fo-sink",
        &[
            ("RTS_REDIS_SENTINELS", &addrs),
            ("RTS_REDIS_MASTER_NAME", MASTER),
            ("RTS_SINK_URL", receiver.url.as_str()),
        ],
    )
    .await;
    let table = "fo-sink";
    let mut w = Client::connect(&side, "writer").await;
    let commit = |i: usize| {
        let mut body = change(table, &format!("r{}", i % 3), "f", json!(i));
        body["clientChangeId"] = json!(format!("c{i}"));
        body
    };
    for i in 0..10 {
        w.request_ok("record_change", commit(i)).await;
    }
    support::wait_for(
        "the first entries delivered",
        Duration::from_secs(20),
        || async { (receiver.delivered_ids().len() >= 10).then_some(()) },
    )
    .await;
    let old = set.primary_port().await.unwrap();
    set.server(old).kill();
    let new = set.wait_for_new_primary(old, Duration::from_secs(30)).await;
    // Each commit is resent (same clientChangeId) until it is answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 10..20 {
        while w.request("record_change", commit(i)).await.is_err() {
            assert!(Instant::now() < deadline, "writes did not resume");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let client = redis::Client::open(format!("redis://127.0.0.1:{new}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ids = stream_ids(&mut conn, table).await;
    assert_eq!(ids.len(), 20, "durable writes: nothing lost");
    support::wait_for("every entry delivered", Duration::from_secs(30), || async {
        let got: HashSet<String> = receiver.delivered_ids().into_iter().collect();
        ids.iter().all(|id| got.contains(id)).then_some(())
    })
    .await;
}
