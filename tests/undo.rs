//! Undo and redo (docs/protocol.md 3.3): a user's own steps, reverted only
//! where nobody changed the field since, over both endpoints and across
//! sidecars, with the stacks in Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::client::{Client, Enc};
use support::sio::Sio;
use support::tokens::now_secs;
use support::{Cluster, RedisServer, Sidecar};

const LONG: Duration = Duration::from_secs(20);

/// A record change of several fields in its own undo group (so that each
/// edit of a test is one step, however fast they follow each other).
fn edit(kind: &str, record: &str, fields: &[(&str, Value)], group: &str) -> Value {
    let changes: Vec<Value> = fields
        .iter()
        .map(|(f, v)| json!({"fieldId": f, "newValue": v}))
        .collect();
    json!({"type": kind, "recordId": record, "tableId": "t", "baseId": "b1",
        "changes": changes, "metadata": {"undoGroup": group}})
}

fn set(record: &str, field: &str, value: Value, group: &str) -> Value {
    edit("update", record, &[(field, value)], group)
}

async fn stored(redis: &RedisServer, record: &str, field: &str) -> Option<Value> {
    let raw: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(format!("rts:{{t}}:rec:{record}"))
        .arg(format!("d:{field}"))
        .query_async(&mut redis.conn().await)
        .await
        .expect("HGET");
    raw.map(|r| serde_json::from_slice(&r).expect("state values are JSON text"))
}

async fn deleted(redis: &RedisServer, record: &str) -> bool {
    let del: Option<String> = redis::cmd("HGET")
        .arg(format!("rts:{{t}}:rec:{record}"))
        .arg("_del")
        .query_async(&mut redis.conn().await)
        .await
        .expect("HGET");
    del.as_deref() == Some("1")
}

async fn undo(c: &mut Client) -> Value {
    c.request_ok("undo", json!({"tableId": "t"})).await
}

async fn redo(c: &mut Client) -> Value {
    c.request_ok("redo", json!({"tableId": "t"})).await
}

async fn commit(c: &mut Client, change: Value) -> Value {
    let ack = c.request_ok("record_change", change).await;
    assert_eq!(ack["status"], "applied", "{ack}");
    ack
}

async fn one_sidecar() -> (RedisServer, Sidecar) {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "undo", &[]).await;
    (redis, side)
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_reverts_the_users_own_last_change() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!("a"))], "g1")).await;
    let second = commit(&mut ana, set("r1", "f", json!("b"), "g2")).await;
    let answer = undo(&mut ana).await;
    assert_eq!(answer["status"], "applied", "{answer}");
    assert_eq!(
        answer["undone"], second["eventId"],
        "the step is named by its event"
    );
    assert_eq!(answer["version"], 3);
    assert_eq!(answer["skipped"], json!([]));
    assert_eq!(stored(&redis, "r1", "f").await, Some(json!("a")));
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_skips_a_field_a_colleague_changed_since_and_says_who() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    let mut bob = Client::connect(&side, "bob").await;
    commit(
        &mut ana,
        edit("create", "r1", &[("f", json!(1)), ("g", json!(1))], "g1"),
    )
    .await;
    commit(
        &mut ana,
        edit("update", "r1", &[("f", json!(2)), ("g", json!(2))], "g2"),
    )
    .await;
    commit(&mut bob, set("r1", "f", json!(9), "b1")).await;
    let answer = undo(&mut ana).await;
    assert_eq!(answer["status"], "partial", "{answer}");
    assert_eq!(
        answer["skipped"],
        json!([{"recordId": "r1", "fieldId": "f", "reason": "changed", "by": "bob", "theirValue": 9}])
    );
    assert_eq!(
        stored(&redis, "r1", "f").await,
        Some(json!(9)),
        "bob's value stays"
    );
    assert_eq!(
        stored(&redis, "r1", "g").await,
        Some(json!(1)),
        "ana's other field is undone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_of_a_change_a_colleague_overwrote_is_a_conflict_that_writes_nothing() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    let mut bob = Client::connect(&side, "bob").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!(1))], "g1")).await;
    commit(&mut ana, set("r1", "f", json!(2), "g2")).await;
    commit(&mut bob, set("r1", "f", json!(9), "b1")).await;
    let before = support::stream_ids(&mut redis.conn().await, "t")
        .await
        .len();
    let answer = undo(&mut ana).await;
    assert_eq!(answer["status"], "conflict", "{answer}");
    assert!(answer.get("eventId").is_none(), "{answer}");
    assert_eq!(answer["skipped"][0]["theirValue"], 9);
    assert_eq!(
        support::stream_ids(&mut redis.conn().await, "t")
            .await
            .len(),
        before
    );
    // The step is consumed: the next undo reverts the one before it.
    let next = undo(&mut ana).await;
    assert_eq!(
        next["status"], "conflict",
        "undo of the create meets bob's change: {next}"
    );
    assert!(
        !deleted(&redis, "r1").await,
        "a record a colleague changed is not deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_within_500_ms_are_one_step() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!(0))], "setup")).await;
    let mut first = json!({"type": "update", "recordId": "r1", "tableId": "t", "baseId": "b1",
        "changes": [{"fieldId": "f", "newValue": 1}]});
    commit(&mut ana, first.clone()).await;
    first["changes"] = json!([{"fieldId": "g", "newValue": 1}]);
    commit(&mut ana, first).await;
    let answer = undo(&mut ana).await;
    assert_eq!(answer["status"], "applied", "{answer}");
    assert_eq!(stored(&redis, "r1", "f").await, Some(json!(0)));
    assert_eq!(
        stored(&redis, "r1", "g").await,
        None,
        "g had no value before the step"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_offline_batch_is_one_step() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!(0))], "setup")).await;
    commit(&mut ana, edit("create", "r2", &[("f", json!(0))], "setup2")).await;
    let offline = |record: &str, cc: &str| {
        json!({"type": "update", "entityId": record, "tableId": "t", "baseId": "b1",
            "changes": [{"fieldId": "f", "newValue": 5}], "clientChangeId": cc})
    };
    ana.request_ok(
        "sync_offline_changes",
        json!([offline("r1", "o1"), offline("r2", "o2")]),
    )
    .await;
    ana.expect_event("offline_sync_complete").await;
    let answer = undo(&mut ana).await;
    assert_eq!(answer["status"], "applied", "{answer}");
    assert_eq!(
        answer["events"].as_array().map(Vec::len),
        Some(2),
        "one entry per record"
    );
    assert_eq!(stored(&redis, "r1", "f").await, Some(json!(0)));
    assert_eq!(stored(&redis, "r2", "f").await, Some(json!(0)));
}

#[tokio::test(flavor = "multi_thread")]
async fn redo_reapplies_an_undone_step() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!("a"))], "g1")).await;
    commit(&mut ana, set("r1", "f", json!("b"), "g2")).await;
    let undone = undo(&mut ana).await;
    let answer = redo(&mut ana).await;
    assert_eq!(answer["status"], "applied", "{answer}");
    assert_eq!(
        answer["redone"], undone["eventId"],
        "the redo step is the undo's event"
    );
    assert_eq!(stored(&redis, "r1", "f").await, Some(json!("b")));
    let again = undo(&mut ana).await;
    assert_eq!(again["status"], "applied", "a redo can be undone: {again}");
    assert_eq!(stored(&redis, "r1", "f").await, Some(json!("a")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_change_clears_the_redo_stack() {
    let (_redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!("a"))], "g1")).await;
    commit(&mut ana, set("r1", "f", json!("b"), "g2")).await;
    undo(&mut ana).await;
    commit(&mut ana, set("r1", "g", json!("c"), "g3")).await;
    let answer = redo(&mut ana).await;
    assert_eq!(answer["status"], "nothing", "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_stack_answers_nothing() {
    let (_redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    assert_eq!(undo(&mut ana).await, json!({"status": "nothing"}));
    assert_eq!(redo(&mut ana).await, json!({"status": "nothing"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_and_redo_are_shared_by_a_users_connections_on_two_sidecars() {
    let cluster = Cluster::start().await;
    let mut on_a = Client::connect(&cluster.a, "ana").await;
    let mut on_b = Client::connect(&cluster.b, "ana").await;
    commit(&mut on_a, edit("create", "r1", &[("f", json!("a"))], "g1")).await;
    commit(&mut on_a, set("r1", "f", json!("b"), "g2")).await;
    assert_eq!(undo(&mut on_b).await["status"], "applied");
    assert_eq!(stored(&cluster.redis, "r1", "f").await, Some(json!("a")));
    assert_eq!(redo(&mut on_a).await["status"], "applied");
    assert_eq!(stored(&cluster.redis, "r1", "f").await, Some(json!("b")));
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_of_a_delete_brings_the_record_back_with_its_fields() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    let mut watcher = Client::subscribed(&side, "wendy", "t").await;
    commit(
        &mut ana,
        edit(
            "create",
            "r1",
            &[("f", json!({"a": []})), ("g", json!(2))],
            "g1",
        ),
    )
    .await;
    let delete = json!({"type": "delete", "recordId": "r1", "tableId": "t", "baseId": "b1",
        "metadata": {"undoGroup": "g2"}});
    commit(&mut ana, delete).await;
    let answer = undo(&mut ana).await;
    assert_eq!(answer["status"], "applied", "{answer}");
    assert!(!deleted(&redis, "r1").await);
    let events = watcher.changes(3, LONG).await;
    let back = &events[2];
    assert_eq!(back["type"], "create", "{back}");
    assert_eq!(back["metadata"]["undelete"], true);
    let mut fields: Vec<Value> = back["changes"].as_array().unwrap().clone();
    fields.sort_by_key(|c| c["fieldId"].as_str().unwrap().to_owned());
    assert_eq!(
        fields,
        vec![
            json!({"fieldId": "f", "newValue": {"a": []}}),
            json!({"fieldId": "g", "newValue": 2})
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_of_a_create_deletes_the_record_and_redo_brings_it_back() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!(1))], "g1")).await;
    assert_eq!(undo(&mut ana).await["status"], "applied");
    assert!(deleted(&redis, "r1").await);
    assert_eq!(redo(&mut ana).await["status"], "applied");
    assert!(!deleted(&redis, "r1").await);
    assert_eq!(stored(&redis, "r1", "f").await, Some(json!(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_works_through_socketio() {
    let (redis, side) = one_sidecar().await;
    let token = support::tokens::token("ana");
    let mut sio = Sio::connect(&side, &json!({ "token": token })).await;
    let create = edit("create", "r1", &[("f", json!("a"))], "g1");
    let ack = sio.request(1, "record_change", &create).await.expect("ack");
    assert_eq!(ack["status"], "applied", "{ack}");
    let ack = sio
        .request(2, "record_change", &set("r1", "f", json!("b"), "g2"))
        .await
        .expect("ack");
    assert_eq!(ack["status"], "applied", "{ack}");
    let answer = sio
        .request(3, "undo", &json!({"tableId": "t"}))
        .await
        .expect("ack");
    assert_eq!(answer["status"], "applied", "{answer}");
    assert_eq!(stored(&redis, "r1", "f").await, Some(json!("a")));
    let answer = sio
        .request(4, "redo", &json!({"tableId": "t"}))
        .await
        .expect("ack");
    assert_eq!(answer["status"], "applied", "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_undo_reaches_other_clients_as_a_change_with_undo_of() {
    let (_redis, side) = one_sidecar().await;
    let mut ana = Client::subscribed(&side, "ana", "t").await;
    let mut bob = Client::subscribed(&side, "bob", "t").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!("a"))], "g1")).await;
    let second = commit(&mut ana, set("r1", "f", json!("b"), "g2")).await;
    let answer = undo(&mut ana).await;
    let events = bob.changes(3, LONG).await;
    let e = &events[2];
    assert_eq!(e["id"], answer["eventId"]);
    assert_eq!(e["type"], "update");
    assert_eq!(e["userId"], "ana");
    assert_eq!(e["metadata"], json!({"undoOf": second["eventId"]}));
    assert_eq!(
        e["changes"],
        json!([{"fieldId": "f", "oldValue": "b", "oldVersion": 2, "newValue": "a"}])
    );
    assert_eq!(e["version"], 3);
    // Like any change, never sent back to the connection that made it.
    let own = ana.take_within(Duration::from_millis(300), |(ev, d, _)| {
        ev == "record_change" && d["id"] == answer["eventId"]
    });
    assert!(own.await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_skipped_field_the_user_may_not_read_is_not_revealed() {
    let (_redis, side) = one_sidecar().await;
    let intern = json!({"sub": "ivy", "exp": now_secs() + 3600,
        "tables": {"*": {"access": "rw", "fields": {"salary": "none"}}}});
    let mut ivy = Client::connect_claims(&side, &intern, Enc::MsgPack).await;
    let mut boss = Client::connect(&side, "boss").await;
    commit(
        &mut ivy,
        edit("create", "r1", &[("name", json!("x"))], "g1"),
    )
    .await;
    commit(&mut boss, set("r1", "salary", json!(99_000), "b1")).await;
    let answer = undo(&mut ivy).await;
    assert_eq!(answer["status"], "conflict", "{answer}");
    assert_eq!(
        answer["skipped"],
        json!([{"recordId": "r1", "fieldId": "salary", "reason": "changed"}])
    );
    let text = answer.to_string();
    assert!(!text.contains("99000") && !text.contains("boss"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_undo_stack_keeps_at_most_100_steps() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!(0))], "setup")).await;
    for i in 1..=105 {
        commit(&mut ana, set("r1", "f", json!(i), &format!("g{i}"))).await;
    }
    let len: usize = redis::cmd("LLEN")
        .arg("rts:{t}:undo:3:ana")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(len, 100);
    for _ in 0..100 {
        assert_eq!(undo(&mut ana).await["status"], "applied");
    }
    assert_eq!(undo(&mut ana).await["status"], "nothing");
    assert_eq!(
        stored(&redis, "r1", "f").await,
        Some(json!(5)),
        "the oldest steps are gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resent_undo_with_its_client_change_id_is_a_duplicate() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!("a"))], "g1")).await;
    commit(&mut ana, set("r1", "f", json!("b"), "g2")).await;
    let req = json!({"tableId": "t", "clientChangeId": "undo-1"});
    let first = ana.request_ok("undo", req.clone()).await;
    let again = ana.request_ok("undo", req).await;
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["originalStatus"], "applied");
    assert_eq!(again["eventId"], first["eventId"]);
    assert_eq!(
        stored(&redis, "r1", "f").await,
        Some(json!("a")),
        "undone once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn undone_values_read_back_exactly_as_they_were_written() {
    let (_redis, side) = one_sidecar().await;
    let mut ana = Client::connect_json(&side, "ana").await;
    let mut bob = Client::subscribed(&side, "bob", "t").await;
    let exact = [
        json!({}),
        json!([]),
        json!(u64::MAX),
        json!(9_007_199_254_740_993u64),
    ];
    let fields: Vec<(&str, Value)> = ["a", "b", "c", "d"]
        .into_iter()
        .zip(exact.clone())
        .collect();
    commit(&mut ana, edit("create", "r1", &fields, "g1")).await;
    let zeros: Vec<(&str, Value)> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|f| (f, json!(0)))
        .collect();
    commit(&mut ana, edit("update", "r1", &zeros, "g2")).await;
    undo(&mut ana).await;
    let loaded = ana
        .request_ok("load_records", json!({"tableId": "t", "recordIds": ["r1"]}))
        .await;
    let state = &loaded["records"][0]["fields"];
    for (f, v) in &fields {
        assert_eq!(&state[*f], v, "{f}");
    }
    let events = bob.changes(3, LONG).await;
    let restored: Vec<Value> = events[2]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["newValue"].clone())
        .collect();
    assert_eq!(restored, exact.to_vec());
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_needs_write_access() {
    let (_redis, side) = one_sidecar().await;
    let reader = json!({"sub": "rita", "exp": now_secs() + 3600, "tables": {"t": "r"}});
    let mut rita = Client::connect_claims(&side, &reader, Enc::Json).await;
    let err = rita
        .request("undo", json!({"tableId": "t"}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "forbidden", "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn steps_undo_one_after_another_and_redo_in_turn() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!("a"))], "g1")).await;
    commit(&mut ana, set("r1", "f", json!("b"), "g2")).await;
    commit(&mut ana, set("r1", "f", json!("c"), "g3")).await;
    for expected in [Some(json!("b")), Some(json!("a"))] {
        assert_eq!(undo(&mut ana).await["status"], "applied");
        assert_eq!(stored(&redis, "r1", "f").await, expected);
    }
    assert_eq!(undo(&mut ana).await["status"], "applied", "the create");
    assert!(deleted(&redis, "r1").await);
    assert_eq!(redo(&mut ana).await["status"], "applied");
    assert!(!deleted(&redis, "r1").await);
    for expected in [json!("b"), json!("c")] {
        assert_eq!(redo(&mut ana).await["status"], "applied");
        assert_eq!(stored(&redis, "r1", "f").await, Some(expected));
    }
    assert_eq!(redo(&mut ana).await["status"], "nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_through_the_http_api_records_no_undo_step() {
    let (redis, side) = one_sidecar().await;
    let body = json!({"changes": [{"type": "create", "entityId": "r1", "entityType": "record",
        "tableId": "t", "userId": "ana", "changes": [{"fieldId": "f", "newValue": 1}]}]});
    let (status, answer) = side.http(
        "POST",
        "/api/v1/sync/batch-changes",
        &[("Authorization", "Bearer test-api-token-0123")],
        &body.to_string(),
    );
    assert_eq!(status, 200, "{answer}");
    let mut ana = Client::connect(&side, "ana").await;
    assert_eq!(undo(&mut ana).await["status"], "nothing");
    assert_eq!(stored(&redis, "r1", "f").await, Some(json!(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_is_in_the_records_history() {
    let (_redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!("a"))], "g1")).await;
    commit(&mut ana, set("r1", "f", json!("b"), "g2")).await;
    let answer = undo(&mut ana).await;
    let history = ana
        .request_ok("record_history", json!({"tableId": "t", "recordId": "r1"}))
        .await;
    let newest = &history["events"][0];
    assert_eq!(newest["id"], answer["eventId"], "{history}");
    assert_eq!(newest["metadata"]["undoOf"], answer["undone"]);
    assert_eq!(history["events"].as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_that_would_write_a_field_the_user_may_no_longer_write_is_forbidden() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(
        &mut ana,
        edit("create", "r1", &[("status", json!("todo"))], "g1"),
    )
    .await;
    commit(&mut ana, set("r1", "status", json!("done"), "g2")).await;
    let demoted = json!({"sub": "ana", "exp": now_secs() + 3600,
        "tables": {"*": {"access": "rw", "fields": {"status": "r"}}}});
    let mut later = Client::connect_claims(&side, &demoted, Enc::Json).await;
    let err = later
        .request("undo", json!({"tableId": "t"}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "forbidden", "{err}");
    assert_eq!(stored(&redis, "r1", "status").await, Some(json!("done")));
    assert_eq!(undo(&mut ana).await["status"], "applied", "the step stayed");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_that_brings_a_record_back_is_audited_as_an_undelete() {
    let (_redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!(1))], "g1")).await;
    let delete = json!({"type": "delete", "recordId": "r1", "tableId": "t", "baseId": "b1",
        "metadata": {"undoGroup": "g2"}});
    commit(&mut ana, delete).await;
    assert_eq!(undo(&mut ana).await["events"][0]["type"], "create");
    let entry = support::wait_for("the undelete's audit entry", LONG, || async {
        let (_, v) = side.api("GET", "/api/v1/audit?action=record_undeleted", &Value::Null);
        v["data"]["entries"]
            .as_array()
            .and_then(|e| e.first().cloned())
    })
    .await;
    assert_eq!(
        (&entry["actor"], &entry["tableId"], &entry["recordId"]),
        (&json!("ana"), &json!("t"), &json!("r1"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_of_a_create_keeps_a_record_a_colleague_changed_after_the_users_later_edit_was_undone()
{
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    let mut bob = Client::connect(&side, "bob").await;
    commit(&mut ana, edit("create", "r1", &[("f", json!(1))], "g1")).await;
    commit(&mut ana, set("r1", "f", json!(2), "g2")).await;
    commit(&mut bob, set("r1", "g", json!(5), "b1")).await;
    assert_eq!(undo(&mut ana).await["status"], "applied");
    let answer = undo(&mut ana).await;
    assert_eq!(answer["status"], "conflict", "{answer}");
    assert_eq!(
        answer["skipped"],
        json!([{"recordId": "r1", "fieldId": "g", "reason": "changed", "by": "bob", "theirValue": 5}])
    );
    assert!(!deleted(&redis, "r1").await, "bob's record is kept");
    assert_eq!(stored(&redis, "r1", "g").await, Some(json!(5)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_past_64_kib_of_old_values_starts_a_new_step_so_joining_stays_cheap() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    let big = json!("x".repeat(100_000));
    commit(&mut ana, edit("create", "r1", &[("f", big)], "g0")).await;
    commit(&mut ana, set("r1", "f", json!("y"), "G")).await;
    commit(&mut ana, set("r1", "g", json!(1), "G")).await;
    assert_eq!(undo(&mut ana).await["status"], "applied");
    assert_eq!(
        stored(&redis, "r1", "g").await,
        None,
        "g's change is undone"
    );
    let f = stored(&redis, "r1", "f").await;
    assert!(f == Some(json!("y")), "f's change is a step of its own");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_joined_by_time_alone_stays_within_1_kib_so_a_larger_join_starts_a_new_step() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    let long = json!("x".repeat(2000));
    commit(
        &mut ana,
        edit("create", "r1", &[("f", long.clone())], "setup"),
    )
    .await;
    // Two changes named by no group, well within 500 ms: the first's step
    // keeps f's 2000-byte old value, so the second would take it past 1 KiB.
    let mut change = json!({"type": "update", "recordId": "r1", "tableId": "t", "baseId": "b1",
        "changes": [{"fieldId": "f", "newValue": "y"}]});
    commit(&mut ana, change.clone()).await;
    change["changes"] = json!([{"fieldId": "g", "newValue": 1}]);
    commit(&mut ana, change).await;
    assert_eq!(undo(&mut ana).await["status"], "applied");
    assert_eq!(
        stored(&redis, "r1", "g").await,
        None,
        "g's change is undone"
    );
    assert_eq!(
        stored(&redis, "r1", "f").await,
        Some(json!("y")),
        "f's change is a step of its own"
    );
    assert_eq!(undo(&mut ana).await["status"], "applied");
    assert_eq!(stored(&redis, "r1", "f").await, Some(long));
}

/// The `changes` of the table's last stream entry, as stored.
async fn last_changes(redis: &RedisServer) -> String {
    let reply: redis::Value = redis::cmd("XREVRANGE")
        .arg("rts:{t}:events")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut redis.conn().await)
        .await
        .expect("XREVRANGE");
    let entries = rtsync::store::tailer::entries(reply);
    let (_, fields) = entries.into_iter().next().expect("an entry");
    let raw = fields
        .into_iter()
        .find(|(k, _)| k == "changes")
        .map(|(_, v)| v)
        .unwrap_or_default();
    String::from_utf8(raw).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_leaves_old_values_out_of_its_event_when_they_would_pass_the_frame_limit() {
    let (redis, side) = one_sidecar().await;
    let mut ana = Client::connect(&side, "ana").await;
    let a = "a".repeat(600_000);
    let b = "b".repeat(600_000);
    commit(&mut ana, edit("create", "r1", &[("f", json!(a))], "g1")).await;
    commit(&mut ana, set("r1", "f", json!(b), "g2")).await;
    assert_eq!(undo(&mut ana).await["status"], "applied");
    let changes = last_changes(&redis).await;
    assert!(changes.len() <= 1 << 20, "{} bytes", changes.len());
    let changes: Value = serde_json::from_str(&changes).expect("json");
    let c = &changes[0];
    assert!(c.get("oldValue").is_none() && c["oldValueOmitted"] == true);
    assert!(c["newValue"] == json!(a), "the value written back is in it");
    assert_eq!(c["oldVersion"], 2);
}
