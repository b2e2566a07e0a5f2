//! Commits and fan-out across sidecars: exactly once, in stream order,
//! never back to the origin connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::client::{change, Client};
use support::{ids, stream_ids};
use support::{Cluster, RedisServer, Sidecar};

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn record_change_is_acked_with_the_commit_result() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&side, "u1").await;
    let first = c
        .request_ok("record_change", change("t", "r1", "f1", json!(1)))
        .await;
    assert_eq!(first["status"], "applied");
    assert_eq!(first["version"], 1);
    let event_id = first["eventId"].as_str().unwrap();
    assert!(event_id.contains('-'));
    let second = c
        .request_ok(
            "record_change",
            json!({"type": "update", "recordId": "r1", "tableId": "t", "baseId": "b",
                   "version": 1, "changes": [{"fieldId": "f1", "newValue": 2}]}),
        )
        .await;
    assert_eq!(second["status"], "applied");
    assert_eq!(second["version"], 2);
    assert_eq!(stream_ids(&mut redis.conn().await, "t").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_from_several_writers_reaches_every_subscriber_once_in_stream_order() {
    let cluster = Cluster::start().await;
    let table = "burst";
    let mut subscribers = Vec::new();
    for (i, side) in [
        &cluster.a, &cluster.b, &cluster.a, &cluster.b, &cluster.a, &cluster.b,
    ]
    .into_iter()
    .enumerate()
    {
        subscribers.push(Client::subscribed(side, &format!("sub{i}"), table).await);
    }
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 100;
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let side = if w % 2 == 0 { &cluster.a } else { &cluster.b };
        let mut writer = Client::connect(side, &format!("writer{w}")).await;
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..PER_WRITER {
                let ack = writer
                    .request_ok(
                        "record_change",
                        change(table, &format!("r{w}"), "f", json!(n)),
                    )
                    .await;
                acked.push(ack["eventId"].as_str().unwrap().to_owned());
            }
            acked
        }));
    }
    let mut acked = HashSet::new();
    for h in handles {
        acked.extend(h.await.unwrap());
    }
    assert_eq!(acked.len(), WRITERS * PER_WRITER);
    let in_stream = stream_ids(&mut cluster.redis.conn().await, table).await;
    assert_eq!(in_stream.len(), WRITERS * PER_WRITER);
    for sub in &mut subscribers {
        let got = sub.changes(WRITERS * PER_WRITER, LONG).await;
        assert_eq!(ids(&got), in_stream, "every event once, in stream order");
        // Nothing more arrives after the last one.
        assert!(sub
            .take_within(Duration::from_millis(200), |(e, _, _)| e == "record_change"
                || e == "batch_changes")
            .await
            .is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_connection_does_not_receive_its_own_change() {
    let cluster = Cluster::start().await;
    let mut writer = Client::subscribed(&cluster.a, "w", "t").await;
    let mut same_side = Client::subscribed(&cluster.a, "x", "t").await;
    let mut other_side = Client::subscribed(&cluster.b, "y", "t").await;
    let own = writer
        .request_ok("record_change", change("t", "r", "f", json!("mine")))
        .await;
    let theirs = other_side
        .request_ok("record_change", change("t", "r", "f", json!("theirs")))
        .await;
    // The writer's next change event is the other one's: its own was skipped.
    let got = writer.changes(1, LONG).await;
    assert_eq!(got[0]["id"], theirs["eventId"]);
    assert_eq!(
        ids(&same_side.changes(2, LONG).await),
        vec![
            own["eventId"].as_str().unwrap().to_owned(),
            theirs["eventId"].as_str().unwrap().to_owned()
        ]
    );
    let got = other_side.changes(1, LONG).await;
    assert_eq!(got[0]["id"], own["eventId"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn change_event_carries_the_documented_fields() {
    let cluster = Cluster::start().await;
    let mut sub = Client::subscribed(&cluster.b, "reader", "t").await;
    let mut writer = Client::connect(&cluster.a, "writer").await;
    let ack = writer
        .request_ok(
            "record_change",
            json!({"type": "create", "recordId": "r9", "tableId": "t", "baseId": "b1",
                   "changes": [{"fieldId": "f1", "newValue": {"nested": [1, 2.5, "x", null]}}],
                   "metadata": {"source": "grid"}}),
        )
        .await;
    let e = &sub.changes(1, LONG).await[0];
    assert_eq!(e["id"], ack["eventId"]);
    assert_eq!(e["type"], "create");
    assert_eq!(e["entityType"], "record");
    assert_eq!(e["entityId"], "r9");
    assert_eq!(e["tableId"], "t");
    assert_eq!(e["baseId"], "b1");
    assert_eq!(e["userId"], "writer");
    assert_eq!(e["version"], 1);
    assert_eq!(
        e["changes"][0]["newValue"],
        json!({"nested": [1, 2.5, "x", null]})
    );
    assert_eq!(e["metadata"], json!({"source": "grid"}));
    assert!(e["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(e.get("origin").is_none(), "origin is internal");
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_ack_names_the_last_event_and_everything_after_it_arrives() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut writer = Client::connect(&side, "w").await;
    let before = writer
        .request_ok("record_change", change("t", "r", "f", json!(1)))
        .await;
    let mut sub = Client::connect(&side, "s").await;
    let ack = sub
        .request_ok("subscribe_to_table", json!({"tableId": "t", "viewId": "v"}))
        .await;
    assert_eq!(ack["tableId"], "t");
    assert_eq!(ack["lastEventId"], before["eventId"]);
    assert!(ack["color"].as_str().unwrap().starts_with('#'));
    let after = writer
        .request_ok("record_change", change("t", "r", "f", json!(2)))
        .await;
    let got = sub.changes(1, LONG).await;
    assert_eq!(
        got[0]["id"], after["eventId"],
        "no backlog replayed, nothing missed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unsubscribe_stops_delivery() {
    let cluster = Cluster::start().await;
    let mut leaving = Client::subscribed(&cluster.a, "leaving", "t").await;
    let mut staying = Client::subscribed(&cluster.a, "staying", "t").await;
    let ack = leaving
        .request_ok("unsubscribe_from_table", json!({"tableId": "t"}))
        .await;
    assert_eq!(ack["tableId"], "t");
    let mut writer = Client::connect(&cluster.b, "w").await;
    writer
        .request_ok("record_change", change("t", "r", "f", json!(1)))
        .await;
    assert_eq!(staying.changes(1, LONG).await.len(), 1);
    assert!(leaving
        .changes(1, Duration::from_millis(500))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_group_follows_local_subscriptions() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "group-owner", &[]).await;
    let mut conn = redis.conn().await;
    let groups = |conn: &mut rtsync::store::Conn| {
        let mut conn = conn.clone();
        async move {
            let v: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg("rts:{t}:events")
                .query_async(&mut conn)
                .await
                .unwrap_or(redis::Value::Nil);
            format!("{v:?}").contains("group-owner")
        }
    };
    let mut sub = Client::subscribed(&side, "s", "t").await;
    assert!(groups(&mut conn).await, "group created on first subscribe");
    sub.request_ok("unsubscribe_from_table", json!({"tableId": "t"}))
        .await;
    support::wait_for("group removed", Duration::from_secs(5), || {
        let mut c = conn.clone();
        async move { (!groups(&mut c).await).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_the_connection_ends_its_subscriptions() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let sub = Client::subscribed(&side, "s", "t").await;
    sub.close().await;
    support::wait_for("no subscriptions left", Duration::from_secs(5), || async {
        let (_, body) = side.http(
            "GET",
            "/api/v1/sync/stats",
            &[("Authorization", "Bearer test-api-token-0123")],
            "",
        );
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["data"]["tableSubscriptions"] == 0 && v["data"]["totalConnections"] == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_subprotocol_speaks_json_end_to_end() {
    let cluster = Cluster::start().await;
    let mut json_client = Client::open(&cluster.a, Some("rtsync.v1.json"), &[], "").await;
    json_client
        .request_ok(
            "authenticate",
            json!({"token": support::tokens::token("j")}),
        )
        .await;
    json_client
        .request_ok("subscribe_to_table", json!({"tableId": "t", "viewId": "v"}))
        .await;
    let mut writer = Client::connect(&cluster.b, "w").await;
    let ack = writer
        .request_ok("record_change", change("t", "r", "f", json!("é")))
        .await;
    let got = json_client.changes(1, LONG).await;
    assert_eq!(got[0]["id"], ack["eventId"]);
    assert_eq!(got[0]["changes"][0]["newValue"], "é");
    // A MessagePack frame on a JSON connection is accepted; answers stay JSON.
    json_client.enc = support::client::Enc::MsgPack;
    json_client
        .request_ok("heartbeat", json!({"tableId": "t"}))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_subprotocol_is_refused() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let url = side.ws_url();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "chat.v9".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}
