//! rtsync on a local 3-primary Redis Cluster: fan-out, presence, conflicts
//! and recovery work unchanged, and a table's slot can move to another node
//! while clients write (with durable writes too), with nothing lost or
//! repeated.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::client::{change, Client};
use support::redis_cluster::RedisCluster;
use support::Sidecar;
use support::{ids, stream_ids};

const LONG: Duration = Duration::from_secs(30);

async fn sidecars(cluster: &RedisCluster) -> (Sidecar, Sidecar) {
    let env = [("RTS_REDIS_CLUSTER", "true")];
    let a = Sidecar::start_url(&cluster.urls(), "cluster-a", &env).await;
    let b = Sidecar::start_url(&cluster.urls(), "cluster-b", &env).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn fanout_on_a_cluster_reaches_every_subscriber_once_in_order() {
    let cluster = RedisCluster::start().await;
    let (a, b) = sidecars(&cluster).await;
    let tables: Vec<String> = (0..6).map(|i| format!("ct{i}")).collect();
    let mut subs = Vec::new();
    for t in &tables {
        subs.push((t.clone(), Client::subscribed(&a, "sa", t).await));
        subs.push((t.clone(), Client::subscribed(&b, "sb", t).await));
    }
    let mut writers = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let side = if i % 2 == 0 { &a } else { &b };
        let mut w = Client::connect(side, &format!("w{i}")).await;
        let t = t.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..40 {
                w.request_ok("record_change", change(&t, "r", "f", json!(n)))
                    .await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    for (t, mut c) in subs {
        let expected = stream_ids(&mut cluster.conn().await, &t).await;
        assert_eq!(expected.len(), 40);
        assert_eq!(ids(&c.changes(40, LONG).await), expected, "table {t}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_conflicts_and_recovery_work_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let (a, b) = sidecars(&cluster).await;
    let mut alice = Client::subscribed(&a, "alice", "t").await;
    let mut bob = Client::subscribed(&b, "bob", "t").await;
    let (_, joined, _) = alice
        .take(|(e, d, _)| e == "user_joined" && d["userId"] == "bob")
        .await
        .expect("user_joined across sidecars");
    assert_eq!(joined["tableId"], "t");
    bob.request_ok(
        "cursor_position",
        json!({"tableId": "t", "cursor": {"recordId": "r", "fieldId": "f"}}),
    )
    .await;
    alice
        .take(|(e, d, _)| e == "cursor_position" && d["userId"] == "bob")
        .await
        .expect("cursor relayed");
    let first = alice
        .request_ok("record_change", change("t", "r", "f", json!("a")))
        .await;
    let second = alice
        .request_ok(
            "record_change",
            json!({"type": "update", "recordId": "r", "tableId": "t",
        "version": 1, "changes": [{"fieldId": "f", "newValue": "a2"}]}),
        )
        .await;
    let over = bob
        .request_ok(
            "record_change",
            json!({"type": "update", "recordId": "r", "tableId": "t",
        "version": 1, "changes": [{"fieldId": "f", "newValue": "b"}]}),
        )
        .await;
    assert_eq!(over["status"], "overwritten");
    let mut late = Client::connect(&b, "late").await;
    let ack = late
        .request_ok(
            "recover_connection",
            json!({"tableId": "t", "lastEventId": first["eventId"]}),
        )
        .await;
    // The two later events come as missed events, or live when sidecar b's
    // tailer had not read them yet at the join: each once, in order.
    let missed = ack["missedEventsCount"].as_u64().unwrap_or(99);
    assert!(missed <= 2, "{ack}");
    let events = late.all_events(2, Duration::from_secs(10)).await;
    assert_eq!(
        ids(&events),
        [
            second["eventId"].as_str().unwrap(),
            over["eventId"].as_str().unwrap()
        ]
    );
}

/// (slot, owner port, owner id, other port, other id) for a key.
async fn slot_owner(cluster: &RedisCluster, key: &str) -> (u16, u16, String, u16, String) {
    let mut node = cluster.node(cluster.ports[0]).await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut node)
        .await
        .unwrap();
    let mut owner = None;
    let mut ids = Vec::new();
    for port in cluster.primaries() {
        let mut c = cluster.node(*port).await;
        let id: String = redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut c)
            .await
            .unwrap();
        let n: i64 = redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query_async(&mut c)
            .await
            .unwrap_or(0);
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await
            .unwrap();
        let mine = nodes
            .lines()
            .find(|l| l.contains("myself"))
            .unwrap()
            .to_owned();
        let owns = mine.split_whitespace().skip(8).any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
        });
        let _ = n;
        if owns {
            owner = Some((*port, id.clone()));
        }
        ids.push((*port, id));
    }
    let (owner_port, owner_id) = owner.expect("an owner");
    let (other_port, other_id) = ids.into_iter().find(|(p, _)| *p != owner_port).unwrap();
    (slot, owner_port, owner_id, other_port, other_id)
}

/// Moves `slot` from one node to another the way `redis-cli --cluster
/// reshard` does: importing/migrating, MIGRATE of every key, then SETSLOT NODE.
async fn move_slot(cluster: &RedisCluster, slot: u16, from: (u16, &str), to: (u16, &str)) {
    let mut src = cluster.node(from.0).await;
    let mut dst = cluster.node(to.0).await;
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(from.1)
        .query_async(&mut dst)
        .await
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(to.1)
        .query_async(&mut src)
        .await
        .unwrap();
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query_async(&mut src)
            .await
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let mut m = redis::cmd("MIGRATE");
        m.arg("127.0.0.1")
            .arg(to.0)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS");
        for k in &keys {
            m.arg(k);
        }
        let _: redis::Value = m.query_async(&mut src).await.unwrap();
    }
    for port in cluster.primaries() {
        let mut c = cluster.node(*port).await;
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(to.1)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn table_slot_moves_to_another_node_while_clients_write() {
    let cluster = RedisCluster::start().await;
    let (a, b) = sidecars(&cluster).await;
    slot_moves_under_writes(&cluster, &a, &b).await;
}

/// With `RTS_DURABLE_WRITES=replica` commits are grouped per slot, one wait
/// per group: those caught by the move (`MOVED`/`ASK` inside a group) are
/// sent again to the new owner, each once.
#[tokio::test(flavor = "multi_thread")]
async fn table_slot_moves_while_clients_write_with_durable_writes() {
    let cluster = RedisCluster::start_with_replicas(1).await;
    let env = [
        ("RTS_REDIS_CLUSTER", "true"),
        ("RTS_DURABLE_WRITES", "replica"),
    ];
    let a = Sidecar::start_url(&cluster.urls(), "cluster-a", &env).await;
    let b = Sidecar::start_url(&cluster.urls(), "cluster-b", &env).await;
    slot_moves_under_writes(&cluster, &a, &b).await;
}

/// Writes 150 changes to a table on `a` while its slot moves to another
/// primary; each is acknowledged, in the stream once, and delivered once in
/// order to a subscriber on `b`.
async fn slot_moves_under_writes(cluster: &RedisCluster, a: &Sidecar, b: &Sidecar) {
    let mut sub = Client::subscribed(b, "sub", "moving").await;
    let mut writer = Client::connect(a, "writer").await;
    let (slot, from_port, from_id, to_port, to_id) =
        slot_owner(cluster, "rts:{moving}:events").await;
    let writing = tokio::spawn(async move {
        let mut acked = Vec::new();
        for n in 0..150 {
            let mut data = change("moving", "r", "f", json!(n));
            data["clientChangeId"] = json!(format!("m{n}"));
            loop {
                match writer.request("record_change", data.clone()).await {
                    Ok(ack) => {
                        acked.push(ack["eventId"].as_str().unwrap().to_owned());
                        break;
                    }
                    Err(e) => {
                        // Not sent (`unavailable`), or sent without an answer
                        // (`timeout`): both are resent with the same id.
                        assert!(e["code"] == "unavailable" || e["code"] == "timeout", "{e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
        acked
    });
    // Let some writes land, then move the table's slot.
    support::wait_for("some writes", LONG, || async {
        (stream_ids(&mut cluster.conn().await, "moving").await.len() >= 30).then_some(())
    })
    .await;
    move_slot(cluster, slot, (from_port, &from_id), (to_port, &to_id)).await;
    let acked = writing.await.unwrap();
    let mut dedup = acked.clone();
    dedup.dedup();
    assert_eq!(
        dedup.len(),
        150,
        "duplicates answered with the first result"
    );
    let stream = stream_ids(&mut cluster.conn().await, "moving").await;
    assert_eq!(stream.len(), 150, "each change once in the stream");
    let got = sub.changes(stream.len(), LONG).await;
    assert_eq!(
        ids(&got),
        stream,
        "delivered once, in order, across the move"
    );
    // The stream now lives on the other node.
    let mut dst = cluster.node(to_port).await;
    let n: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut dst)
        .await
        .unwrap();
    assert!(n > 0);
}

/// A cluster with a replica per primary: the primary holding a table is
/// SIGKILLed under writes; its replica is promoted, and the sidecars follow
/// (`MOVED`, a refreshed slot map): writes resume, the table's events reach
/// the subscriber on the other sidecar live, and so does presence.
#[allow(clippy::too_many_lines)] // one scenario, end to end (predates the 80-line rule)
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_cluster_primary_is_replaced_and_writes_tailing_and_presence_resume() {
    let mut cluster = RedisCluster::start_with_replicas(1).await;
    let (a, b) = sidecars(&cluster).await;
    let t = "cfo";
    let subscribe = json!({"tableId": t, "viewId": "v"});
    let mut watcher = Client::connect(&b, "watcher").await;
    watcher
        .request_ok("subscribe_to_table", subscribe.clone())
        .await;
    let mut mover = Client::connect(&a, "mover").await;
    mover.request_ok("subscribe_to_table", subscribe).await;
    let mut w = Client::connect(&a, "writer").await;
    let body = |i: usize| {
        let mut c = change(t, &format!("r{}", i % 3), "f", json!(i));
        c["clientChangeId"] = json!(format!("c{i}"));
        c
    };
    for i in 0..5 {
        w.request_ok("record_change", body(i)).await;
    }
    assert_eq!(watcher.changes(5, LONG).await.len(), 5);

    let mut node = cluster.node(cluster.ports[0]).await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(format!("{{{t}}}"))
        .query_async(&mut node)
        .await
        .unwrap();
    let old = cluster.slot_primary(cluster.ports[0], slot).await.unwrap();
    let via = *cluster.ports.iter().find(|p| **p != old).unwrap();
    let killed_at = std::time::Instant::now();
    cluster.kill_node(old);
    support::wait_for("a replica promoted for the table's slot", LONG, || async {
        cluster.slot_primary(via, slot).await.filter(|p| *p != old)
    })
    .await;
    // Each commit is resent (same clientChangeId) until it is answered.
    let mut after = Vec::new();
    for i in 5..10 {
        loop {
            match w.request("record_change", body(i)).await {
                Ok(r) => {
                    after.push(r["eventId"].as_str().unwrap().to_owned());
                    break;
                }
                Err(e) => {
                    assert!(killed_at.elapsed() < LONG, "writes did not resume: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    eprintln!(
        "cluster failover: SIGKILL to writes resumed and done: {:?}",
        killed_at.elapsed()
    );
    let live = watcher.changes(5, LONG).await;
    let live_ids: Vec<String> = ids(&live);
    for id in &after {
        assert!(
            live_ids.contains(id),
            "{id} did not reach the subscriber live: {live_ids:?}"
        );
    }
    // Presence resumes too: a cursor from one sidecar reaches the other.
    let mut relayed = false;
    while !relayed {
        assert!(
            killed_at.elapsed() < LONG * 2,
            "no cursor relayed after the failover"
        );
        mover
            .request_ok(
                "cursor_position",
                json!({"tableId": t, "cursor": {"recordId": "r1", "fieldId": "f"}}),
            )
            .await;
        relayed = watcher
            .take_within(Duration::from_millis(500), |(e, d, _)| {
                e == "cursor_position" && d["userId"] == "mover"
            })
            .await
            .is_some();
    }
}
