//! Presence across sidecars (docs/protocol.md sections 3, 4 and 7): joins and
//! leaves, table users, colors, cursors and selections, grace and staleness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::client::{change, Client};
use support::{RedisServer, Sidecar};

struct Two {
    _redis: RedisServer,
    a: Sidecar,
    b: Sidecar,
}

async fn two(env: &[(&str, &str)]) -> Two {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "pa", env).await;
    let b = Sidecar::start(&redis, "pb", env).await;
    Two {
        _redis: redis,
        a,
        b,
    }
}

async fn event_for(c: &mut Client, event: &str, user: &str, within: Duration) -> Option<Value> {
    c.take_within(within, |(e, d, _)| e == event && d["userId"] == user)
        .await
        .map(|(_, d, _)| d)
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn join_on_one_sidecar_is_announced_on_the_other() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    let joined = event_for(&mut alice, "user_joined", "bob", WAIT)
        .await
        .expect("user_joined");
    assert_eq!(joined["tableId"], "t");
    assert_eq!(joined["viewId"], "v1");
    assert_eq!(joined["userName"], "User bob");
    assert!(joined["color"].as_str().unwrap().starts_with('#'));
    assert!(joined["lastSeen"].as_u64().is_some());
    assert!(
        joined.get("conns").is_none(),
        "internal fields stay internal"
    );
    // Nobody is told about themselves joining.
    assert!(
        event_for(&mut bob, "user_joined", "bob", Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriber_gets_table_users_with_everyone_present() {
    let t = two(&[]).await;
    let _alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    let users = bob.expect_event("table_users").await;
    let ids: HashSet<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, HashSet::from(["alice", "bob"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriber_gets_recent_changes_oldest_first() {
    let t = two(&[("RTS_RECENT_CHANGES", "3")]).await;
    let mut w = Client::connect(&t.a, "w").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let ack = w
            .request_ok("record_change", change("t", "r", "f", json!(n)))
            .await;
        ids.push(ack["eventId"].clone());
    }
    let mut s = Client::subscribed(&t.b, "s", "t").await;
    let recent = s.expect_event("recent_changes").await;
    let got: Vec<Value> = recent
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(got, ids[2..].to_vec());
}

#[tokio::test(flavor = "multi_thread")]
async fn twelve_present_users_get_distinct_colors() {
    let t = two(&[]).await;
    let mut clients = Vec::new();
    let mut colors = HashSet::new();
    for i in 0..12 {
        let side = if i % 2 == 0 { &t.a } else { &t.b };
        let mut c = Client::connect(side, &format!("u{i}")).await;
        let ack = c
            .request_ok("subscribe_to_table", json!({"tableId": "t", "viewId": "v"}))
            .await;
        colors.insert(ack["color"].as_str().unwrap().to_owned());
        clients.push(c);
    }
    assert_eq!(colors.len(), 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn color_is_stable_while_present() {
    let t = two(&[]).await;
    let mut tab1 = Client::connect(&t.a, "ann").await;
    let first = tab1
        .request_ok("subscribe_to_table", json!({"tableId": "t", "viewId": "v"}))
        .await;
    let mut tab2 = Client::connect(&t.b, "ann").await;
    let second = tab2
        .request_ok("subscribe_to_table", json!({"tableId": "t", "viewId": "v"}))
        .await;
    assert_eq!(first["color"], second["color"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_and_selection_are_relayed_to_other_sidecars() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    bob.request_ok(
        "cursor_position",
        json!({"tableId": "t", "cursor": {"recordId": "r1", "fieldId": "f1", "x": 3}}),
    )
    .await;
    let cursor = event_for(&mut alice, "cursor_position", "bob", WAIT)
        .await
        .expect("cursor");
    assert_eq!(
        cursor["cursor"],
        json!({"recordId": "r1", "fieldId": "f1", "x": 3})
    );
    assert_eq!(cursor["tableId"], "t");
    let sel = json!({"startRecordId": "r1", "startFieldId": "f1", "endRecordId": "r2", "endFieldId": "f2"});
    bob.request_ok("selection", json!({"tableId": "t", "selection": sel}))
        .await;
    let got = event_for(&mut alice, "selection", "bob", WAIT)
        .await
        .expect("selection");
    assert_eq!(got["selection"], sel);
    // Kept in the presence record: a later subscriber sees it.
    let mut carol = Client::subscribed(&t.a, "carol", "t").await;
    let users = carol.expect_event("table_users").await;
    let bob_p = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(bob_p["selection"], sel);
    assert_eq!(bob_p["cursor"]["recordId"], "r1");
    // Not echoed to the sender.
    assert!(event_for(
        &mut bob,
        "cursor_position",
        "bob",
        Duration::from_millis(300)
    )
    .await
    .is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_storm_is_throttled_and_the_last_move_arrives() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    let started = std::time::Instant::now();
    for n in 0..300 {
        bob.send(
            "cursor_position",
            json!({"tableId": "t", "cursor": {"recordId": format!("r{n}"), "fieldId": "f"}}),
            None,
        )
        .await;
    }
    // A round trip after the storm: every move has been handled.
    bob.request_ok("heartbeat", json!({"tableId": "t"})).await;
    let storm = started.elapsed();
    let mut received = Vec::new();
    while let Some(c) = event_for(
        &mut alice,
        "cursor_position",
        "bob",
        Duration::from_millis(500),
    )
    .await
    {
        let last = c["cursor"]["recordId"] == "r299";
        received.push(c);
        if last {
            break;
        }
    }
    assert_eq!(
        received.last().unwrap()["cursor"]["recordId"],
        "r299",
        "the latest move wins"
    );
    let allowed = (storm.as_millis() / 50) as usize + 3;
    assert!(
        received.len() <= allowed,
        "{} relayed in {storm:?} (allowed {allowed})",
        received.len()
    );
    assert!(received.len() < 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_left_after_the_last_connection_closes() {
    let t = two(&[("RTS_PRESENCE_GRACE_MS", "300")]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let bob = Client::subscribed(&t.b, "bob", "t").await;
    event_for(&mut alice, "user_joined", "bob", WAIT)
        .await
        .expect("joined");
    bob.close().await;
    let left = event_for(&mut alice, "user_left", "bob", WAIT)
        .await
        .expect("user_left");
    assert_eq!(left, json!({"userId": "bob", "tableId": "t"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn unsubscribe_leaves_the_table() {
    let t = two(&[("RTS_PRESENCE_GRACE_MS", "200")]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    bob.request_ok("unsubscribe_from_table", json!({"tableId": "t"}))
        .await;
    event_for(&mut alice, "user_left", "bob", WAIT)
        .await
        .expect("user_left");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_tab_keeps_the_user_present() {
    let t = two(&[("RTS_PRESENCE_GRACE_MS", "200")]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let tab1 = Client::subscribed(&t.b, "bob", "t").await;
    let _tab2 = Client::subscribed(&t.a, "bob", "t").await;
    tab1.close().await;
    assert!(
        event_for(&mut alice, "user_left", "bob", Duration::from_millis(800))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_within_grace_is_user_reconnected_without_user_left() {
    let t = two(&[("RTS_PRESENCE_GRACE_MS", "1500")]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let bob = Client::subscribed(&t.b, "bob", "t").await;
    event_for(&mut alice, "user_joined", "bob", WAIT)
        .await
        .expect("joined");
    bob.close().await;
    // Reconnect once sidecar b has seen the close (else the user never
    // left, and there is nothing to announce).
    let conn = t._redis.conn().await;
    support::wait_for("b saw bob leave", WAIT, || {
        let mut conn = conn.clone();
        async move {
            let doc: Option<String> = redis::cmd("HGET")
                .arg("rts:{t}:presence")
                .arg("bob")
                .query_async(&mut conn)
                .await
                .ok()?;
            doc?.contains("\"conns\":{}").then_some(())
        }
    })
    .await;
    let _bob_again = Client::subscribed(&t.a, "bob", "t").await;
    event_for(&mut alice, "user_reconnected", "bob", WAIT)
        .await
        .expect("user_reconnected");
    assert!(
        event_for(&mut alice, "user_left", "bob", Duration::from_millis(2500))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_presence_of_a_killed_sidecar_is_removed_within_the_ttl() {
    let t = two(&[("RTS_PRESENCE_TTL_SECS", "2")]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let _bob = Client::subscribed(&t.b, "bob", "t").await;
    event_for(&mut alice, "user_joined", "bob", WAIT)
        .await
        .expect("joined");
    t.b.signal("KILL");
    let started = std::time::Instant::now();
    let mut left = None;
    while started.elapsed() < Duration::from_secs(8) && left.is_none() {
        alice.request_ok("heartbeat", json!({"tableId": "t"})).await;
        left = event_for(&mut alice, "user_left", "bob", Duration::from_millis(300)).await;
    }
    assert!(left.is_some(), "bob removed after the TTL");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Alice kept her presence by heartbeating.
    let mut carol = Client::subscribed(&t.a, "carol", "t").await;
    let users = carol.expect_event("table_users").await;
    assert!(users
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["userId"] == "alice"));
    assert!(!users
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["userId"] == "bob"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_endpoint_sweeps_on_demand() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "pa", &[("RTS_PRESENCE_TTL_SECS", "600")]).await;
    let mut conn = redis.conn().await;
    // A presence nobody refreshes, last seen long ago.
    let _: () = redis::cmd("HSET")
        .arg("rts:{t}:presence")
        .arg("ghost")
        .arg(r#"{"userId":"ghost","tableId":"t","conns":["x"],"lastSeen":1}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("rts:{t}:seen")
        .arg(1)
        .arg("ghost")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg("rts:presence-tables")
        .arg("t")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (status, body) = a.http(
        "POST",
        "/api/v1/sync/cleanup",
        &[("Authorization", "Bearer test-api-token-0123")],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["message"], "Stale presence data cleaned up successfully");
    assert_eq!(v["data"]["removed"], 1);
    assert_eq!(a.http("POST", "/api/v1/sync/cleanup", &[], "").0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_events_need_a_subscription() {
    let t = two(&[]).await;
    let mut c = Client::connect(&t.a, "u").await;
    let err = c
        .request(
            "cursor_position",
            json!({"tableId": "t", "cursor": {"recordId": "r", "fieldId": "f"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(err["code"], "not_subscribed");
    let sel =
        json!({"startRecordId": "a", "startFieldId": "b", "endRecordId": "c", "endFieldId": "d"});
    let err = c
        .request("selection", json!({"tableId": "t", "selection": sel}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "not_subscribed");
    let err = c
        .request("heartbeat", json!({"tableId": "t"}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "not_subscribed");
}

#[tokio::test(flavor = "multi_thread")]
async fn users_of_a_killed_sidecar_leave_within_30_seconds() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.b, "alice", "t").await;
    let _bob = Client::subscribed(&t.a, "bob", "t").await;
    event_for(&mut alice, "user_joined", "bob", WAIT)
        .await
        .expect("user_joined");
    let killed = std::time::Instant::now();
    t.a.signal("KILL");
    event_for(&mut alice, "user_left", "bob", Duration::from_secs(35))
        .await
        .expect("user_left of the killed sidecar's user");
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "took {:?}",
        killed.elapsed()
    );
}
