//! Base-level events (docs/protocol.md 3.2): an event of `entityType: "base"`
//! reaches every connection subscribed to a table of that base once (not
//! once per table), on every sidecar, and no one else; a reconnecting
//! client gets the base events it missed with `baseLastEventId`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{Client, RedisServer, Sidecar};

const LONG: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(700);

fn rename(side: &Sidecar, base: &str, name: &str) -> String {
    support::rename_base(side, base, name)
}

async fn subscribe(c: &mut Client, table: &str, base: &str) -> Value {
    c.request_ok(
        "subscribe_to_table",
        json!({"tableId": table, "baseId": base}),
    )
    .await
}

fn base_events(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["entityType"] == "base")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_event_reaches_each_connection_on_its_tables_once_and_no_one_else() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "a", &[]).await;
    let b = Sidecar::start(&redis, "b", &[]).await;
    // One connection on two tables of base b1, and one each elsewhere.
    let mut both = Client::connect(&a, "u1").await;
    subscribe(&mut both, "t1", "b1").await;
    let ack = subscribe(&mut both, "t2", "b1").await;
    assert!(ack["baseLastEventId"].is_string(), "{ack}");
    let mut on_b = Client::connect(&b, "u2").await;
    subscribe(&mut on_b, "t1", "b1").await;
    let mut third = Client::connect(&a, "u3").await;
    subscribe(&mut third, "t2", "b1").await;
    let mut other = Client::connect(&b, "u4").await;
    subscribe(&mut other, "t3", "b2").await;

    let id = rename(&a, "b1", "Launch plan");
    for c in [&mut both, &mut on_b, &mut third] {
        let got = c.changes(2, QUIET.max(LONG / 10)).await;
        let base = base_events(&got);
        assert_eq!(base.len(), 1, "exactly once: {got:?}");
        assert_eq!(base[0]["id"], id.as_str());
        assert_eq!(base[0]["baseId"], "b1");
        assert!(base[0].get("tableId").is_none() || base[0]["tableId"].is_null());
        assert_eq!(base[0]["changes"][0]["newValue"], "Launch plan");
    }
    // The other base's subscriber gets its own base's event, never b1's.
    let id2 = rename(&b, "b2", "Other");
    let got = other.changes(2, QUIET).await;
    assert_eq!(support::ids(&got), vec![id2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn base_events_missed_while_away_are_replayed_once_in_order() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "a", &[]).await;
    let b = Sidecar::start(&redis, "b", &[]).await;
    let first = rename(&a, "b1", "v0");
    let mut c = Client::connect(&a, "u").await;
    let ack = subscribe(&mut c, "t1", "b1").await;
    assert_eq!(ack["baseLastEventId"], first.as_str());
    let live = rename(&b, "b1", "v1");
    assert_eq!(support::ids(&c.changes(1, LONG).await), vec![live.clone()]);
    c.close().await;
    // Missed while away.
    let missed: Vec<String> = (2..5).map(|n| rename(&b, "b1", &format!("v{n}"))).collect();
    let mut again = Client::connect(&b, "u").await;
    let ack = again
        .request_ok(
            "subscribe_to_table",
            json!({"tableId": "t1", "baseId": "b1", "lastEventId": "0-0", "baseLastEventId": live}),
        )
        .await;
    assert_eq!(ack["baseLastEventId"], missed[2].as_str());
    // Another table of the same base, rejoined with the same position: the
    // base's missed events still come once.
    again
        .request_ok(
            "subscribe_to_table",
            json!({"tableId": "t2", "baseId": "b1", "baseLastEventId": live}),
        )
        .await;
    let replayed = again.all_events(3, LONG).await;
    assert_eq!(support::ids(&replayed), missed, "in order, once each");
    let after = rename(&a, "b1", "v5");
    let next = again.all_events(1, LONG).await;
    assert_eq!(support::ids(&next), vec![after]);
    assert!(again.all_events(1, QUIET).await.is_empty(), "nothing twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_whose_history_is_gone_asks_for_a_resync() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "a", &[]).await;
    rename(&a, "b1", "v0");
    let mut c = Client::connect(&a, "u").await;
    c.request_ok(
        "subscribe_to_table",
        json!({"tableId": "t1", "baseId": "b1", "baseLastEventId": "99999999999999-0"}),
    )
    .await;
    let resync = c.expect_event("resync_required").await;
    assert_eq!(resync, json!({"baseId": "b1", "reason": "stream_reset"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn leaving_the_last_table_of_a_base_stops_its_events() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&a, "u").await;
    subscribe(&mut c, "t1", "b1").await;
    subscribe(&mut c, "t2", "b1").await;
    c.request_ok("unsubscribe_from_table", json!({"tableId": "t1"}))
        .await;
    let kept = rename(&a, "b1", "still");
    assert_eq!(support::ids(&c.changes(1, LONG).await), vec![kept]);
    c.request_ok("unsubscribe_from_table", json!({"tableId": "t2"}))
        .await;
    rename(&a, "b1", "gone");
    assert!(c.changes(1, QUIET).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn recover_connection_after_a_resubscribe_replays_the_missed_base_events() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&a, "u").await;
    let ack = subscribe(&mut c, "t1", "b1").await;
    let position = ack["baseLastEventId"].as_str().unwrap().to_owned();
    c.close().await;
    let missed: Vec<String> = (0..2).map(|n| rename(&a, "b1", &format!("m{n}"))).collect();
    // The seed's order: subscribe again, then recover with the positions.
    let mut again = Client::connect(&a, "u").await;
    let ack = subscribe(&mut again, "t1", "b1").await;
    let table_start = ack["lastEventId"].clone();
    let recovered = again
        .request_ok(
            "recover_connection",
            json!({"tableId": "t1", "baseId": "b1", "lastEventId": table_start,
                "baseLastEventId": position}),
        )
        .await;
    assert_eq!(recovered["baseLastEventId"], missed[1].as_str());
    let got = again.all_events(2, LONG).await;
    assert_eq!(support::ids(&got), missed);
    assert!(again.all_events(1, QUIET).await.is_empty(), "nothing twice");
}
