//! The commit doorbell carries a small entry (lua/commit.lua `append`,
//! src/store/ring.rs): a sidecar whose last delivered event of the table is
//! the entry before it delivers the entry from the ring, without reading
//! the stream; anything else (a gap, a large entry) is read from the
//! stream, in stream order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::client::{change, Client};
use support::{ids, metric, producer_entry, Cluster};

const LONG: Duration = Duration::from_secs(20);
const RING_ENTRIES: &str = "rtsync_ring_entries_delivered_total";

fn ring_entries(side: &support::Sidecar) -> f64 {
    metric(&side.get("/metrics").1, RING_ENTRIES)
}

/// Two sidecars; a subscriber of table `t` on b and a writer on a, after
/// one commit the subscriber received (so b's cursor is on the stream).
async fn after_one_commit() -> (Cluster, Client, Client) {
    let cluster = Cluster::start().await;
    let mut sub = Client::subscribed(&cluster.b, "s", "t").await;
    let mut w = Client::connect(&cluster.a, "w").await;
    let first = w
        .request_ok("record_change", change("t", "r", "f", json!(0)))
        .await;
    assert_eq!(
        ids(&sub.changes(1, LONG).await),
        [first["eventId"].as_str().unwrap()]
    );
    (cluster, sub, w)
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_entries_reach_the_other_sidecar_from_their_doorbells_without_a_stream_read() {
    let cluster = Cluster::start().await;
    let mut sub = Client::subscribed(&cluster.b, "s", "t").await;
    let mut w = Client::connect(&cluster.a, "w").await;
    let mut acked = Vec::new();
    for i in 0..5 {
        let ack = w
            .request_ok("record_change", change("t", "r", "f", json!(i)))
            .await;
        acked.push(ack["eventId"].as_str().unwrap().to_owned());
    }
    let got = sub.changes(5, LONG).await;
    assert_eq!(ids(&got), acked, "every commit, in commit order");
    // The first entry may be read (the sidecar's cursor starts where its
    // group was made); each later one follows the one before it.
    assert!(
        ring_entries(&cluster.b) >= 4.0,
        "entries delivered from their doorbells: {}",
        ring_entries(&cluster.b)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_producer_entry_between_two_commits_is_delivered_in_stream_order() {
    let (cluster, mut sub, mut w) = after_one_commit().await;
    // The producer rings no doorbell: the next commit's ring names the
    // producer's entry as the one before it, which sidecar b never saw.
    let produced = producer_entry(&cluster.redis, "t", "r2").await;
    let second = w
        .request_ok("record_change", change("t", "r", "f", json!(2)))
        .await;
    let got = sub.changes(2, LONG).await;
    assert_eq!(
        ids(&got),
        [produced.as_str(), second["eventId"].as_str().unwrap()],
        "the producer's entry first, then the commit after it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_too_large_for_its_doorbell_is_read_from_the_stream() {
    let (cluster, mut sub, mut w) = after_one_commit().await;
    let before = ring_entries(&cluster.b);
    let large = w
        .request_ok(
            "record_change",
            change("t", "r", "f", json!("x".repeat(5000))),
        )
        .await;
    let got = sub.changes(1, LONG).await;
    assert_eq!(ids(&got), [large["eventId"].as_str().unwrap()]);
    assert_eq!(got[0]["changes"][0]["newValue"], json!("x".repeat(5000)));
    assert_eq!(ring_entries(&cluster.b), before, "a bare ring: read");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_whose_ring_was_lost_with_the_bus_comes_before_the_carried_entry_after_it() {
    let (cluster, mut sub, mut w) = after_one_commit().await;
    // The buses drop and, in the same transaction, a producer commits: its
    // ring goes to no one, and nothing rings the table when a bus is back.
    let mut conn = cluster.redis.conn().await;
    let (_, lost): (i64, String) = redis::pipe()
        .atomic()
        .cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .cmd("FCALL")
        .arg("rtsync_commit")
        .arg(2)
        .arg("rts:{t}:events")
        .arg("rts:{t}:rec:r2")
        .arg(r#"{"type":"create","entityType":"record","entityId":"r2","userId":"svc"}"#)
        .arg(r#"[{"fieldId":"f","newValue":2}]"#)
        .arg("")
        .query_async(&mut conn)
        .await
        .unwrap();
    let lost: serde_json::Value = serde_json::from_str(&lost).unwrap();
    let lost = lost["eventId"].as_str().unwrap().to_owned();
    cluster.b.wait_for_log("presence bus reconnected").await;
    // The next commit's ring carries its entry and names the lost one as
    // the entry before it: sidecar b must not deliver it ahead of that.
    let next = w
        .request_ok("record_change", change("t", "r", "f", json!(3)))
        .await;
    let got = sub.changes(2, LONG).await;
    assert_eq!(
        ids(&got),
        [lost.as_str(), next["eventId"].as_str().unwrap()],
        "the entry whose ring was lost first, then the one after it, once each"
    );
    assert!(
        sub.changes(1, Duration::from_millis(300)).await.is_empty(),
        "nothing delivered twice"
    );
}
