//! Record history (docs/protocol.md 3.3): every stream entry of a record
//! change holds the values the record held before it, taken by
//! `rtsync_commit` from the store (a writer's `oldValue` is never passed
//! on); a record's history is read from its own index, newest first, paged,
//! byte-bounded and masked, on `/ws`, `/socket.io/` and the HTTP API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The tests drive Redis directly, as a producer would, to build and inspect.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::client::{Client, Enc};
use support::sio::Sio;
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

/// A salary as written: a string, so a test can look for its bytes in
/// raw frames of either encoding.
const SECRET: &str = "SALARY-4242-HIDDEN";

/// Claims of a user whose grant on every table is `grant`.
fn grant_claims(user: &str, grant: Value) -> Value {
    json!({"sub": user, "exp": now_secs() + 3600, "tables": {"*": grant}})
}

/// An update of several fields of one record.
fn edit(table: &str, record: &str, fields: &[(&str, Value)]) -> Value {
    let changes: Vec<Value> = fields
        .iter()
        .map(|(f, v)| json!({"fieldId": f, "newValue": v}))
        .collect();
    json!({"type": "update", "recordId": record, "tableId": table, "baseId": "b1", "changes": changes})
}

/// Every event of a record's history, following `next` page by page.
async fn whole_history(c: &mut Client, table: &str, record: &str, limit: usize) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut before = Value::Null;
    loop {
        let page = c
            .request_ok(
                "record_history",
                json!({"tableId": table, "recordId": record, "before": before, "limit": limit}),
            )
            .await;
        pages.push(page["events"].as_array().unwrap().clone());
        match page.get("next") {
            Some(next) => before = next.clone(),
            None => return pages,
        }
    }
}

/// Entry ids of `record`'s changes in the table's stream, newest first.
async fn stream_ids_of(redis: &RedisServer, table: &str, record: &str) -> Vec<String> {
    let mut conn = redis.conn().await;
    let reply: redis::Value = redis::cmd("XRANGE")
        .arg(format!("rts:{{{table}}}:events"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut ids: Vec<String> = rtsync::store::tailer::entries(reply)
        .into_iter()
        .filter(|(_, fields)| {
            fields
                .iter()
                .any(|(k, v)| k == "entityId" && v.as_slice() == record.as_bytes())
        })
        .map(|(id, _)| id.to_string())
        .collect();
    ids.reverse();
    ids
}

/// Every string in a reply, joined by new lines.
fn all_text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) | redis::Value::VerbatimString { text: s, .. } => s.clone(),
        redis::Value::Array(items) => items.iter().map(all_text).collect::<Vec<_>>().join("\n"),
        redis::Value::Map(pairs) => pairs
            .iter()
            .map(|(_, v)| all_text(v))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn event_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_records_history_across_three_sidecars_is_its_stream_entries_newest_first() {
    let redis = RedisServer::start().await;
    let sides = [
        Sidecar::start(&redis, "hist-a", &[]).await,
        Sidecar::start(&redis, "hist-b", &[]).await,
        Sidecar::start(&redis, "hist-c", &[]).await,
    ];
    let t = "hist-3";
    let mut writers = Vec::new();
    for (i, side) in sides.iter().enumerate() {
        writers.push(Client::connect(side, &format!("w{i}")).await);
    }
    for round in 0..3 {
        for (i, w) in writers.iter_mut().enumerate() {
            let name = json!(format!("name-{round}-{i}"));
            w.request_ok(
                "record_change",
                edit(t, "r1", &[("name", name), ("salary", json!(SECRET))]),
            )
            .await;
            w.request_ok("record_change", edit(t, "other", &[("name", json!(i))]))
                .await;
        }
    }
    let want = stream_ids_of(&redis, t, "r1").await;
    assert_eq!(want.len(), 9);
    for side in &sides {
        let mut hr = Client::connect_json(side, "hr").await;
        let events: Vec<Value> = whole_history(&mut hr, t, "r1", 4).await.concat();
        assert_eq!(event_ids(&events), want);
        assert_eq!(events[0]["changes"][0]["newValue"], "name-2-2");
        assert_eq!(events[0]["changes"][0]["oldValue"], "name-2-1");
        assert_eq!(events[0]["userId"], "w2");
        assert!(events
            .iter()
            .all(|e| e["entityId"] == "r1" && e["tableId"] == t));
    }
    let claims = grant_claims(
        "intern",
        json!({"access": "r", "fields": {"salary": "none"}}),
    );
    for enc in [Enc::Json, Enc::MsgPack] {
        let mut intern = Client::connect_claims(&sides[2], &claims, enc).await;
        let events: Vec<Value> = whole_history(&mut intern, t, "r1", 100).await.concat();
        assert_eq!(event_ids(&events), want, "masked, every event still comes");
        for e in &events {
            let fields: Vec<&str> = e["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["fieldId"].as_str().unwrap())
                .collect();
            assert_eq!(fields, ["name"], "{e}");
        }
        assert!(
            !intern.received_bytes(SECRET.as_bytes()),
            "a salary reached the intern"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_history_without_read_access_is_forbidden() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "hist-forbidden", &[]).await;
    let claims = json!({"sub": "u", "exp": now_secs() + 3600, "tables": {"other": "r"}});
    let mut c = Client::connect_claims(&a, &claims, Enc::Json).await;
    let err = c
        .request(
            "record_history",
            json!({"tableId": "secret", "recordId": "r1"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err["code"], "forbidden", "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn history_pages_follow_next_and_stop_at_the_byte_bound() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "hist-pages", &[("RTS_MAX_PAGE_BYTES", "2048")]).await;
    let t = "hist-pages";
    let mut w = Client::connect(&a, "w").await;
    for i in 0..12 {
        let big = json!(format!("{i:02}-{}", "x".repeat(300)));
        w.request_ok("record_change", edit(t, "r1", &[("note", big)]))
            .await;
    }
    let want = stream_ids_of(&redis, t, "r1").await;

    let pages = whole_history(&mut w, t, "r1", 5).await;
    assert_eq!(
        event_ids(&pages.concat()),
        want,
        "no event twice, none missing"
    );
    assert!(
        pages.len() > 12 / 5 + 1,
        "the byte bound cut pages: {}",
        pages.len()
    );
    for page in &pages {
        let bytes: usize = page.iter().map(|e| e.to_string().len()).sum();
        assert!(
            page.len() == 1 || bytes <= 2 * 2048,
            "{bytes} bytes in {} events",
            page.len()
        );
        assert!(!page.is_empty() && page.len() <= 5);
    }
    // One event larger than the bound still comes, alone.
    let huge = json!("y".repeat(3000));
    w.request_ok("record_change", edit(t, "r1", &[("note", huge)]))
        .await;
    let page = w
        .request_ok(
            "record_history",
            json!({"tableId": t, "recordId": "r1", "limit": 5}),
        )
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert!(page.get("next").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_records_history_keeps_its_last_record_history_changes_and_expires_with_the_stream() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(
        &redis,
        "hist-cap",
        &[("RTS_RECORD_HISTORY", "5"), ("RTS_RETENTION_SECS", "600")],
    )
    .await;
    let t = "hist-cap";
    let mut w = Client::connect(&a, "w").await;
    for i in 0..8 {
        w.request_ok("record_change", edit(t, "r1", &[("n", json!(i))]))
            .await;
    }
    let page = w
        .request_ok("record_history", json!({"tableId": t, "recordId": "r1"}))
        .await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(events[0]["changes"][0]["newValue"], 7);
    assert_eq!(events[4]["changes"][0]["newValue"], 3);
    assert!(page.get("next").is_none());
    let mut conn = redis.conn().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("rts:{hist-cap}:rh:r1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=600_000).contains(&ttl), "{ttl}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_records_history_is_read_from_its_index_whatever_the_tables_other_traffic() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "hist-cost", &[]).await;
    let t = "hist-cost";
    let mut w = Client::connect(&a, "w").await;
    let mut conn = redis.conn().await;
    let stream = format!("rts:{{{t}}}:events");
    for batch in 0..10 {
        let mut pipe = redis::pipe();
        for i in 0..10_000 {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("type")
                .arg("update")
                .arg("entityType")
                .arg("record")
                .arg("entityId")
                .arg(format!("o{batch}-{i}"))
                .arg("userId")
                .arg("p")
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
        if batch == 4 {
            for i in 0..5 {
                w.request_ok("record_change", edit(t, "r1", &[("n", json!(i))]))
                    .await;
            }
        }
    }
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let page = w
        .request_ok("record_history", json!({"tableId": t, "recordId": "r1"}))
        .await;
    let took = started.elapsed();
    assert_eq!(page["events"].as_array().unwrap().len(), 5);
    let stats: redis::Value = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    // One text, or (on a cluster) one per node: the table's node counts.
    let stats = all_text(&stats);
    let calls = |cmd: &str| -> u64 {
        stats
            .lines()
            .filter(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    assert_eq!(
        calls("xrange"),
        5,
        "one XRANGE per id of the record: {stats}"
    );
    assert_eq!(calls("lrange"), 1, "{stats}");
    assert_eq!(
        calls("xrevrange") + calls("xread") + calls("xlen"),
        0,
        "{stats}"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_records_history_is_read_through_socket_io() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "hist-sio", &[]).await;
    let t = "hist-sio";
    let mut w = Client::connect(&a, "w").await;
    for i in 0..3 {
        w.request_ok("record_change", edit(t, "r1", &[("n", json!(i))]))
            .await;
    }
    let token = support::tokens::token("reader");
    let mut sio = Sio::connect(&a, &json!({ "token": token })).await;
    let page = sio
        .request(
            1,
            "record_history",
            &json!({"tableId": t, "recordId": "r1", "limit": 2}),
        )
        .await
        .expect("an ack");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{page}");
    assert_eq!(events[0]["changes"][0]["newValue"], 2);
    assert_eq!(events[0]["changes"][0]["oldValue"], 1);
    assert_eq!(page["next"], events[1]["id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_history_needs_the_api_token_and_sees_every_field() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "hist-http", &[]).await;
    let t = "hist-http";
    let mut w = Client::connect(&a, "w").await;
    for i in 0..3 {
        w.request_ok("record_change", edit(t, "r 1", &[("salary", json!(i))]))
            .await;
    }
    let path = format!("/api/v1/sync/tables/{t}/records/r%201/history?limit=2");
    let (status, body) = a.http("GET", &path, &[], "");
    assert_eq!(status, 401, "{body}");
    let (status, body) = a.http(
        "GET",
        &path,
        &[("Authorization", "Bearer wrong-token-000000")],
        "",
    );
    assert_eq!(status, 401, "{body}");
    let (status, body) = a.api("GET", &path, &Value::Null);
    assert_eq!(status, 200, "{body}");
    let events = body["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["changes"][0]["newValue"], 2);
    assert_eq!(events[0]["entityId"], "r 1");
    let next = body["data"]["next"].as_str().unwrap();
    let (_, rest) = a.api(
        "GET",
        &format!("/api/v1/sync/tables/{t}/records/r%201/history?before={next}"),
        &Value::Null,
    );
    assert_eq!(rest["data"]["events"].as_array().unwrap().len(), 1);
    assert!(rest["data"].get("next").is_none());
    let (status, _) = a.api("GET", &format!("{path}&before=nope"), &Value::Null);
    assert_eq!(status, 400);
}
