//! Record history (docs/protocol.md 3.3): every stream entry of a record
//! change holds the values the record held before it, taken by
//! `rtsync_commit` from the store (a writer's `oldValue` is never passed
//! on); a record's history is read from its own index, newest first, paged,
//! byte-bounded and masked, on `/ws`, `/socket.io/` and the HTTP API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::client::{Client, Enc};
use support::tokens::now_secs;
use support::{RedisServer, Sidecar};

const WAIT: Duration = Duration::from_secs(10);
/// A writer's claim about the value before its change: never believed.
const FORGED: &str = "FORGED-OLD-VALUE-5150";

/// An update of one field, with a forged `oldValue`.
fn forged_update(table: &str, record: &str, field: &str, value: Value) -> Value {
    json!({"type": "update", "recordId": record, "tableId": table, "baseId": "b1",
        "changes": [{"fieldId": field, "oldValue": FORGED, "newValue": value}]})
}

/// `n` updates of `field` by `writer`, each value naming the writer.
async fn write_many(writer: &mut Client, name: &str, table: &str, field: &str, n: usize) {
    for i in 0..n {
        let value = json!(format!("{name}-{i}"));
        writer
            .request_ok("record_change", forged_update(table, "r1", field, value))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_event_of_two_racing_writers_carries_the_value_the_store_held_before_it() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "old-a", &[]).await;
    let b = Sidecar::start(&redis, "old-b", &[]).await;
    let t = "old-race";
    let mut reader = Client::subscribed(&a, "reader", t).await;
    let mut ann = Client::connect(&a, "ann").await;
    let mut bob = Client::connect_json(&b, "bob").await;
    tokio::join!(
        write_many(&mut ann, "ann", t, "status", 20),
        write_many(&mut bob, "bob", t, "status", 20),
    );

    let events = reader.changes(40, WAIT).await;
    assert_eq!(events.len(), 40);
    let mut before: Option<&Value> = None;
    for e in &events {
        let c = &e["changes"][0];
        match before {
            None => {
                assert!(c.get("oldValue").is_none(), "the first has none: {e}");
                assert_eq!(c["oldVersion"], 0);
            }
            Some(prev) => {
                assert_eq!(c["oldValue"], prev["changes"][0]["newValue"], "{e}");
                assert_eq!(c["oldVersion"], prev["version"], "{e}");
            }
        }
        before = Some(e);
    }
    let writers: std::collections::HashSet<&str> =
        events.iter().filter_map(|e| e["userId"].as_str()).collect();
    assert_eq!(writers.len(), 2, "both writers' events arrived");
    for c in [&reader, &ann, &bob] {
        assert!(
            !c.received_bytes(FORGED.as_bytes()),
            "a forged oldValue was passed on"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_records_every_field_the_record_held() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "old-del", &[]).await;
    let t = "old-del";
    let mut reader = Client::subscribed(&a, "reader", t).await;
    let mut w = Client::connect(&a, "w").await;
    w.request_ok(
        "record_change",
        json!({"type": "create", "recordId": "r1", "tableId": t, "baseId": "b1",
            "changes": [{"fieldId": "name", "newValue": "Ann"}, {"fieldId": "n", "newValue": {"a": [1, 2]}}]}),
    )
    .await;
    w.request_ok(
        "record_change",
        json!({"type": "delete", "recordId": "r1", "tableId": t, "baseId": "b1"}),
    )
    .await;
    let events = reader.changes(2, WAIT).await;
    let mut gone: Vec<Value> = events[1]["changes"].as_array().unwrap().clone();
    gone.sort_by_key(|c| c["fieldId"].as_str().unwrap().to_owned());
    assert_eq!(
        gone,
        [
            json!({"fieldId": "n", "oldValue": {"a": [1, 2]}, "oldVersion": 1}),
            json!({"fieldId": "name", "oldValue": "Ann", "oldVersion": 1}),
        ]
    );
}

/// Claims of a user whose grant on every table is `grant`.
fn grant_claims(user: &str, grant: Value) -> Value {
    json!({"sub": user, "exp": now_secs() + 3600, "tables": {"*": grant}})
}

#[allow(dead_code)]
async fn connect_with(side: &Sidecar, user: &str, grant: Value, enc: Enc) -> Client {
    Client::connect_claims(side, &grant_claims(user, grant), enc).await
}
