//! Base-level events (docs/protocol.md 3.2): an event of `entityType: "base"`
//! reaches every connection subscribed to a table of that base once (not
//! once per table), on every sidecar, and no one else; a reconnecting
//! client gets the base events it missed with `baseLastEventId`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::client::Enc;
use support::sio::Sio;
use support::{Client, RedisServer, Sidecar};

const LONG: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(700);

fn rename(side: &Sidecar, base: &str, name: &str) -> String {
    support::rename_base(side, base, name)
}

/// Binds the tables these tests use to their bases, as an app's backend
/// would through the API: t1 and t2 in b1, t3 in b2.
fn bind_tables(side: &Sidecar) {
    for (table, base) in [("t1", "b1"), ("t2", "b1"), ("t3", "b2")] {
        support::bind_base(side, table, base);
    }
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
    bind_tables(&a);
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
    bind_tables(&a);
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
    bind_tables(&a);
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
    bind_tables(&a);
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
    bind_tables(&a);
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

/// A reader of table t1 only (no base granted by its token).
fn reader_claims(user: &str) -> Value {
    let mut c = support::tokens::claims(user);
    c["tables"] = json!({"t1": "r"});
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_the_table_is_not_bound_to_is_never_delivered_on_ws_or_socketio_on_two_sidecars() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "a", &[]).await;
    let b = Sidecar::start(&redis, "b", &[]).await;
    bind_tables(&a);
    support::bind_base(&a, "tsecret", "bsecret");
    for n in 0..3 {
        rename(&a, "bsecret", &format!("past{n}"));
    }
    let named = json!({"tableId": "t1", "baseId": "bsecret", "baseLastEventId": "0-0"});
    let mut ws = Client::connect_claims(&a, &reader_claims("r1"), Enc::Json).await;
    let ack = ws.request_ok("subscribe_to_table", named.clone()).await;
    assert_eq!(ack["baseEvents"], false, "{ack}");
    assert!(ack.get("baseLastEventId").is_none(), "{ack}");
    let token = support::tokens::hs256(&reader_claims("r2"));
    let mut sio = Sio::connect(&b, &json!({ "token": token })).await;
    let ack = sio.request(1, "subscribe_to_table", &named).await.unwrap();
    assert_eq!(ack["baseEvents"], false, "{ack}");
    // The table's own base still comes, to the same reader.
    let mut own = Client::connect_claims(&b, &reader_claims("r3"), Enc::Json).await;
    let ack = own
        .request_ok(
            "subscribe_to_table",
            json!({"tableId": "t1", "baseId": "b1"}),
        )
        .await;
    assert_eq!(ack["baseEvents"], true, "{ack}");

    rename(&b, "bsecret", "live");
    let id = rename(&a, "b1", "visible");
    assert_eq!(support::ids(&own.changes(1, LONG).await), vec![id]);
    assert!(ws.all_events(1, QUIET).await.is_empty());
    assert!(!ws.received_bytes(b"past"), "a past event of the base came");
    assert!(!ws.received_bytes(b"live"), "a live event of the base came");
    let got = sio.events(QUIET).await;
    assert!(
        got.iter().all(|(_, e)| !e.to_string().contains("bsecret")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_granting_a_base_reads_its_events_through_any_readable_table() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "a", &[]).await;
    let mut claims = reader_claims("r1");
    claims["bases"] = json!({"bsecret": "r"});
    let mut c = Client::connect_claims(&a, &claims, Enc::Json).await;
    let ack = c
        .request_ok(
            "subscribe_to_table",
            json!({"tableId": "t1", "baseId": "bsecret"}),
        )
        .await;
    assert_eq!(ack["baseEvents"], true, "{ack}");
    let id = rename(&a, "bsecret", "granted");
    assert_eq!(support::ids(&c.changes(1, LONG).await), vec![id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clients_write_binds_an_unbound_table_only_to_a_base_its_token_grants() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "a", &[]).await;
    let write = |table: &str, base: &str| {
        json!({"type": "update", "recordId": "r1", "tableId": table, "baseId": base,
            "changes": [{"fieldId": "f", "newValue": 1}]})
    };
    // No base granted: the write stands, the table stays unbound.
    let mut plain = Client::connect(&a, "w1").await;
    plain
        .request_ok("record_change", write("t8", "bsecret"))
        .await;
    // Granted: the write binds t9 to b9, and a later granted write of
    // another base does not move it.
    let mut claims = support::tokens::claims("w2");
    claims["bases"] = json!({"b9": "r", "bother": "r"});
    let mut granted = Client::connect_claims(&a, &claims, Enc::Json).await;
    granted.request_ok("record_change", write("t9", "b9")).await;
    granted
        .request_ok("record_change", write("t9", "bother"))
        .await;

    let mut reader = Client::connect(&a, "r").await;
    for (table, base, events) in [
        ("t8", "bsecret", false),
        ("t9", "b9", true),
        ("t9", "bother", false),
    ] {
        let ack = reader
            .request_ok(
                "subscribe_to_table",
                json!({"tableId": table, "baseId": base}),
            )
            .await;
        assert_eq!(ack["baseEvents"], events, "{table} in {base}: {ack}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_development_mode_the_first_write_binds_the_table() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "a", &[("RTS_AUTH", "none")]).await;
    let dev = |user: &str, tables: Option<Value>| {
        let mut auth = json!({"userId": user, "userName": user});
        if let Some(t) = tables {
            auth["tables"] = t;
        }
        auth
    };
    let mut writer = Client::open(&a, Some("rtsync.v1.json"), &[], "").await;
    writer.request_ok("authenticate", dev("w", None)).await;
    for base in ["b5", "b6"] {
        writer
            .request_ok(
                "record_change",
                json!({"type": "update", "recordId": "r1", "tableId": "t5", "baseId": base,
                    "changes": [{"fieldId": "f", "newValue": base}]}),
            )
            .await;
    }
    // A user limited to t5 reads the base its first write named, only.
    let mut intern = Client::open(&a, Some("rtsync.v1.json"), &[], "").await;
    intern
        .request_ok("authenticate", dev("i", Some(json!({"t5": "r"}))))
        .await;
    for (base, events) in [("b5", true), ("b6", false)] {
        let ack = intern
            .request_ok(
                "subscribe_to_table",
                json!({"tableId": "t5", "baseId": base}),
            )
            .await;
        assert_eq!(ack["baseEvents"], events, "{base}: {ack}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_route_refuses_a_base_id_that_is_not_an_id() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "a", &[]).await;
    let body = json!({"records": [], "baseId": "b{1}"});
    let (status, v) = a.api("POST", "/api/v1/sync/tables/t1/records", &body);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    // Nothing was bound: naming that base grants nothing.
    let mut c = Client::connect_claims(&a, &reader_claims("r"), Enc::Json).await;
    let ack = c
        .request_ok(
            "subscribe_to_table",
            json!({"tableId": "t1", "baseId": "b1"}),
        )
        .await;
    assert_eq!(ack["baseEvents"], false, "{ack}");
}

#[tokio::test(flavor = "multi_thread")]
async fn base_joins_count_against_the_subscription_caps() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(
        &redis,
        "a",
        &[
            ("RTS_MAX_SUBSCRIPTIONS", "4"),
            ("RTS_MAX_SUBSCRIPTIONS_PER_USER", "6"),
        ],
    )
    .await;
    let mut claims = support::tokens::claims("u");
    claims["bases"] = json!({"*": "r"});
    let mut c = Client::connect_claims(&a, &claims, Enc::Json).await;
    c.request_ok(
        "subscribe_to_table",
        json!({"tableId": "t1", "baseId": "x1"}),
    )
    .await;
    c.request_ok("subscribe_to_table", json!({"tableId": "t2"}))
        .await;
    // One place is left, not the two a table of a new base needs.
    let refused = c
        .request(
            "subscribe_to_table",
            json!({"tableId": "t3", "baseId": "x3"}),
        )
        .await
        .unwrap_err();
    assert_eq!(refused["code"], "bad_request", "{refused}");
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("RTS_MAX_SUBSCRIPTIONS"));
    // The refused subscribe left nothing behind: t3 alone still fits.
    c.request_ok("subscribe_to_table", json!({"tableId": "t3"}))
        .await;
    // Re-subscribing a table with other bases joins none past the cap.
    let refused = c
        .request(
            "subscribe_to_table",
            json!({"tableId": "t1", "baseId": "x4"}),
        )
        .await
        .unwrap_err();
    assert_eq!(refused["code"], "bad_request", "{refused}");
    // Per user: 4 here and 2 (t1, x1) on a second connection make 6.
    let mut second = Client::connect_claims(&a, &claims, Enc::Json).await;
    second
        .request_ok(
            "subscribe_to_table",
            json!({"tableId": "t1", "baseId": "x1"}),
        )
        .await;
    let refused = second
        .request("subscribe_to_table", json!({"tableId": "t2"}))
        .await
        .unwrap_err();
    assert!(
        refused["message"].as_str().unwrap().contains("PER_USER"),
        "{refused}"
    );
}
