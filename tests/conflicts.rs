//! Conflict resolution in `rtsync_commit` (docs/protocol.md section 4): each
//! status through the WebSocket path and through a direct `FCALL`, input
//! validation inside the function, and a many-writer race whose stream
//! replays to the stored record state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;

use serde_json::{json, Value};
use support::client::Client;
use support::{Cluster, RedisServer, Sidecar};

/// A writer: a WebSocket client, or a service calling the function itself.
enum Writer {
    Ws(Box<Client>),
    Fcall(rtsync::store::Conn),
}

impl Writer {
    /// Commits a record change `{type, recordId, changes?, version?,
    /// metadata?, clientChangeId?}` on table `t`; returns the CommitResult.
    async fn commit(&mut self, change: Value) -> Value {
        match self {
            Writer::Ws(c) => {
                let mut data = change.clone();
                data["tableId"] = json!("t");
                c.request_ok("record_change", data).await
            }
            Writer::Fcall(conn) => {
                let record = change["recordId"].as_str().unwrap();
                let mut header = json!({"type": change["type"], "entityType": "record",
                    "entityId": record, "userId": "svc"});
                for k in ["version", "clientChangeId"] {
                    if let Some(v) = change.get(k) {
                        header[k] = v.clone();
                    }
                }
                let text = |k: &str| {
                    change
                        .get(k)
                        .map(std::string::ToString::to_string)
                        .unwrap_or_default()
                };
                let mut cmd = redis::cmd("FCALL");
                cmd.arg("rtsync_commit");
                match change.get("clientChangeId").and_then(Value::as_str) {
                    Some(cc) => cmd
                        .arg(3)
                        .arg("rts:{t}:events")
                        .arg(format!("rts:{{t}}:rec:{record}"))
                        .arg(format!("rts:{{t}}:cc:3:svc:{cc}")),
                    None => cmd
                        .arg(2)
                        .arg("rts:{t}:events")
                        .arg(format!("rts:{{t}}:rec:{record}")),
                };
                cmd.arg(header.to_string())
                    .arg(text("changes"))
                    .arg(text("metadata"))
                    .arg(86_400_000);
                // v1.1: each new value's own JSON text, stored as given.
                for c in change["changes"].as_array().into_iter().flatten() {
                    cmd.arg(
                        c.get("newValue")
                            .map(std::string::ToString::to_string)
                            .unwrap_or_default(),
                    );
                }
                let reply: String = cmd.query_async(conn).await.expect("fcall");
                serde_json::from_str(&reply).unwrap()
            }
        }
    }
}

/// Both paths against one Redis: (redis, sidecar kept alive, writers).
async fn both_paths() -> Vec<(RedisServer, Sidecar, Writer, Writer)> {
    let mut out = Vec::new();
    for ws in [true, false] {
        let redis = RedisServer::start().await;
        let side = Sidecar::start(&redis, "c", &[]).await;
        let (a, b) = if ws {
            (
                Writer::Ws(Box::new(Client::connect(&side, "alice").await)),
                Writer::Ws(Box::new(Client::connect(&side, "bob").await)),
            )
        } else {
            (
                Writer::Fcall(redis.conn().await),
                Writer::Fcall(redis.conn().await),
            )
        };
        out.push((redis, side, a, b));
    }
    out
}

fn update(record: &str, fields: &[(&str, Value)], version: Option<u64>) -> Value {
    let changes: Vec<Value> = fields
        .iter()
        .map(|(f, v)| json!({"fieldId": f, "newValue": v}))
        .collect();
    let mut c = json!({"type": "update", "recordId": record, "baseId": "b", "changes": changes});
    if let Some(v) = version {
        c["version"] = json!(v);
    }
    c
}

async fn xlen(redis: &RedisServer) -> usize {
    let mut conn = redis.conn().await;
    redis::cmd("XLEN")
        .arg("rts:{t}:events")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn current_version_is_applied() {
    for (_r, _s, mut a, _b) in both_paths().await {
        let first = a.commit(update("r", &[("f1", json!(1))], None)).await;
        assert_eq!(first["status"], "applied");
        let second = a.commit(update("r", &[("f1", json!(2))], Some(1))).await;
        assert_eq!(
            (second["status"].as_str(), second["version"].as_u64()),
            (Some("applied"), Some(2))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_version_touching_unchanged_fields_is_merged() {
    for (_r, _s, mut a, mut b) in both_paths().await {
        a.commit(update("r", &[("f1", json!(1)), ("f2", json!(1))], None))
            .await;
        a.commit(update("r", &[("f1", json!("alice"))], Some(1)))
            .await;
        let merged = b
            .commit(update("r", &[("f2", json!("bob"))], Some(1)))
            .await;
        assert_eq!(merged["status"], "merged");
        assert_eq!(merged["version"], 3);
        assert!(merged.get("conflicts").is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_version_touching_changed_field_is_overwritten_with_conflicts() {
    for (_r, _s, mut a, mut b) in both_paths().await {
        a.commit(update("r", &[("f1", json!(1))], None)).await;
        a.commit(update("r", &[("f1", json!("alice"))], Some(1)))
            .await;
        let over = b
            .commit(update("r", &[("f1", json!("bob"))], Some(1)))
            .await;
        assert_eq!(over["status"], "overwritten");
        assert_eq!(
            over["conflicts"],
            json!([{"fieldId": "f1", "theirValue": "alice"}])
        );
        assert_eq!(over["version"], 3);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_conflict_reject_rejects_with_current_state_and_writes_nothing() {
    for (redis, _s, mut a, mut b) in both_paths().await {
        a.commit(update("r", &[("f1", json!(1)), ("f2", json!("x"))], None))
            .await;
        a.commit(update("r", &[("f1", json!("alice"))], Some(1)))
            .await;
        let before = xlen(&redis).await;
        let mut change = update("r", &[("f1", json!("bob"))], Some(1));
        change["metadata"] = json!({"onConflict": "reject"});
        let rejected = b.commit(change).await;
        assert_eq!(rejected["status"], "rejected");
        assert_eq!(rejected["reason"], "conflict");
        assert_eq!(rejected["current"]["version"], 2);
        assert_eq!(
            rejected["current"]["fields"],
            json!({"f1": "alice", "f2": "x"})
        );
        assert!(rejected.get("eventId").is_none());
        assert_eq!(xlen(&redis).await, before, "no stream entry");
        let next = a.commit(update("r", &[("f3", json!(0))], Some(2))).await;
        assert_eq!(next["version"], 3, "no version bump");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_to_a_deleted_record_are_rejected() {
    for (redis, _s, mut a, mut b) in both_paths().await {
        a.commit(update("r", &[("f1", json!(1))], None)).await;
        let del = a
            .commit(json!({"type": "delete", "recordId": "r", "version": 1}))
            .await;
        assert_eq!(del["status"], "applied");
        let before = xlen(&redis).await;
        let upd = b.commit(update("r", &[("f1", json!(2))], None)).await;
        assert_eq!(
            (upd["status"].as_str(), upd["reason"].as_str()),
            (Some("rejected"), Some("deleted"))
        );
        assert_eq!(upd["current"]["deleted"], true);
        let del2 = b.commit(json!({"type": "delete", "recordId": "r"})).await;
        assert_eq!(del2["status"], "rejected");
        assert_eq!(xlen(&redis).await, before);
        // A create brings it back.
        let again = b
            .commit(json!({"type": "create", "recordId": "r", "changes": [{"fieldId": "f9", "newValue": 9}]}))
            .await;
        assert_eq!(again["status"], "applied");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_of_an_existing_record_is_rejected() {
    for (_r, _s, mut a, mut b) in both_paths().await {
        let created = a
            .commit(json!({"type": "create", "recordId": "r", "changes": [{"fieldId": "f", "newValue": 1}]}))
            .await;
        assert_eq!(created["status"], "applied");
        let dup = b
            .commit(json!({"type": "create", "recordId": "r", "changes": [{"fieldId": "f", "newValue": 2}]}))
            .await;
        assert_eq!(
            (dup["status"].as_str(), dup["reason"].as_str()),
            (Some("rejected"), Some("exists"))
        );
        assert_eq!(dup["current"]["fields"]["f"], 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_client_change_id_is_a_duplicate_and_writes_nothing() {
    for (redis, _s, mut a, _b) in both_paths().await {
        let mut change = update("r", &[("f", json!(1))], None);
        change["clientChangeId"] = json!("cc-1");
        let first = a.commit(change.clone()).await;
        assert_eq!(first["status"], "applied");
        let before = xlen(&redis).await;
        let again = a.commit(change).await;
        assert_eq!(again["status"], "duplicate");
        assert_eq!(again["eventId"], first["eventId"]);
        assert_eq!(again["version"], first["version"]);
        assert_eq!(xlen(&redis).await, before);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn version_from_the_future_is_rejected() {
    for (_r, _s, mut a, _b) in both_paths().await {
        a.commit(update("r", &[("f", json!(1))], None)).await;
        let r = a.commit(update("r", &[("f", json!(2))], Some(5))).await;
        assert_eq!(
            (r["status"].as_str(), r["reason"].as_str()),
            (Some("rejected"), Some("version_ahead"))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn non_record_entities_have_versions_and_stale_ones_are_rejected() {
    let redis = RedisServer::start().await;
    let mut conn = redis.conn().await;
    let call = |entity_type: &str, version: Option<u64>| {
        let (stream, state) = if entity_type == "base" {
            ("rts:{b1}:base-events", "rts:{b1}:ver")
        } else {
            ("rts:{t}:events", "rts:{t}:ver")
        };
        let mut header = json!({"type": "update", "entityType": entity_type, "entityId": "e1",
            "userId": "svc", "baseId": "b1"});
        if let Some(v) = version {
            header["version"] = json!(v);
        }
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("rtsync_commit")
            .arg(2)
            .arg(stream)
            .arg(state)
            .arg(header.to_string())
            .arg("")
            .arg("");
        cmd
    };
    // The sidecar loads the library; start one for that.
    let _side = Sidecar::start(&redis, "lib", &[]).await;
    for entity in ["field", "view", "table", "base"] {
        let first: String = call(entity, None).query_async(&mut conn).await.unwrap();
        let first: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(
            (first["status"].as_str(), first["version"].as_u64()),
            (Some("applied"), Some(1))
        );
        let ok: String = call(entity, Some(1)).query_async(&mut conn).await.unwrap();
        assert_eq!(serde_json::from_str::<Value>(&ok).unwrap()["version"], 2);
        let stale: String = call(entity, Some(1)).query_async(&mut conn).await.unwrap();
        let stale: Value = serde_json::from_str(&stale).unwrap();
        assert_eq!(
            (stale["status"].as_str(), stale["reason"].as_str()),
            (Some("rejected"), Some("stale_version"))
        );
    }
    let base_len: usize = redis::cmd("XLEN")
        .arg("rts:{b1}:base-events")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(base_len, 2);
    let versions: HashMap<String, String> = redis::cmd("HGETALL")
        .arg("rts:{t}:ver")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(versions.get("field:e1").map(String::as_str), Some("2"));
}

#[allow(clippy::too_many_lines)] // one scenario, end to end (predates the 80-line rule)
#[tokio::test(flavor = "multi_thread")]
async fn function_refuses_bad_input_with_a_clear_error_and_no_write() {
    let redis = RedisServer::start().await;
    let _side = Sidecar::start(&redis, "lib", &[]).await;
    let mut conn = redis.conn().await;
    let ok_header = r#"{"type":"update","entityType":"record","entityId":"r","userId":"u"}"#;
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["1", "rts:{t}:events", ok_header, "", ""],
            "expects 2 or 3 keys",
        ),
        (
            vec!["2", "rts:{t}:events", "rts:{t}:rec:r", ok_header],
            "expects arguments",
        ),
        (
            vec!["2", "rts:{t}:events", "rts:{t}:rec:r", "not json", "", ""],
            "change must be a JSON object",
        ),
        (
            vec![
                "2",
                "rts:{t}:events",
                "rts:{t}:rec:r",
                r#"{"type":"update","entityType":"record","entityId":"r","userId":"u","version":"abc"}"#,
                "",
                "",
            ],
            "version must be a non-negative integer",
        ),
        (
            vec![
                "2",
                "rts:{t}:events",
                "rts:{t}:rec:r",
                r#"{"type":"fly","entityType":"record","entityId":"r","userId":"u"}"#,
                "",
                "",
            ],
            "type must be create, update or delete",
        ),
        (
            vec![
                "2",
                "rts:{t}:events",
                "rts:{t}:rec:r",
                r#"{"type":"update","entityType":"record","entityId":"r"}"#,
                "",
                "",
            ],
            "userId must be an id",
        ),
        (
            vec![
                "2",
                "rts:{t}:events",
                "rts:{t}:rec:r",
                ok_header,
                "{\"a\":1}",
                "",
            ],
            "changes must be a JSON array",
        ),
        (
            vec![
                "2",
                "rts:{t}:events",
                "rts:{t}:rec:r",
                ok_header,
                "[{\"a\":1}]",
                "",
            ],
            "fieldId must be an id",
        ),
        (
            vec![
                "2",
                "rts:{t}:events",
                "rts:{t}:rec:r",
                ok_header,
                "[{\"fieldId\":\"f\"}]",
                "[1",
            ],
            "metadata must be a JSON object",
        ),
        (
            vec![
                "2",
                "rts:{t}:events",
                "rts:{t}:rec:r",
                r#"{"type":"update","entityType":"record","entityId":"r","userId":"u","clientChangeId":"c"}"#,
                "",
                "",
            ],
            "needs the dedup key",
        ),
        (
            vec![
                "2",
                "rts:{t}:events",
                "rts:{t}:rec:r",
                ok_header,
                "",
                "",
                "-5",
            ],
            "retentionMs must be a positive number",
        ),
        (
            vec![
                "3",
                "rts:{t}:events",
                "rts:{t}:rec:r",
                "rts:{t}:cc:c",
                r#"{"type":"update","entityType":"record","entityId":"r","userId":"u","clientChangeId":"c"}"#,
                "",
                "",
            ],
            "the dedup key must be rts:{t}:cc:1:u:c",
        ),
        (
            vec![
                "2",
                "rts:{t}:events",
                "rts:{t}:rec:r",
                ok_header,
                "[{\"fieldId\":\"f\",\"newValue\":1}]",
                "",
                "1000",
                "1",
                "2",
            ],
            "one value argument per entry of changes",
        ),
        (
            vec![
                "2",
                "rts:{t}:events",
                "rts:{t}:rec:r",
                "{\"type\":\"update\",\"entityType\":\"record\",\"entityId\":\"r\u{202e}x\",\"userId\":\"u\"}",
                "",
                "",
            ],
            "entityId must be an id",
        ),
    ];
    let bad_versions = ["NaN", "1e999", "-1e999", "-1", "1.5", "9007199254740994"];
    let version_cases: Vec<String> = bad_versions
        .iter()
        .map(|v| format!(r#"{{"type":"update","entityType":"record","entityId":"r","userId":"u","version":{v}}}"#))
        .collect();
    let mut cases = cases;
    for header in &version_cases {
        cases.push((
            vec!["2", "rts:{t}:events", "rts:{t}:rec:r", header, "", ""],
            "version must be a non-negative integer",
        ));
    }
    for (args, expected) in cases {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("rtsync_commit");
        for a in &args {
            cmd.arg(*a);
        }
        let err = cmd
            .query_async::<String>(&mut conn)
            .await
            .expect_err(expected);
        let text = err.to_string();
        assert_eq!(err.code(), Some("RTSYNC_INVALID"), "{text}");
        assert!(
            text.contains("rtsync_commit:") && text.contains(expected),
            "{expected}: got {text}"
        );
    }
    let exists: bool = redis::cmd("EXISTS")
        .arg("rts:{t}:events")
        .query_async(&mut conn)
        .await
        .unwrap();
    let rec: bool = redis::cmd("EXISTS")
        .arg("rts:{t}:rec:r")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists && !rec, "nothing was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_batch_changes_use_the_same_version_checks() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let auth = [
        ("Authorization", "Bearer test-api-token-0123"),
        ("Content-Type", "application/json"),
    ];
    let body = json!({"changes": [
        {"type": "create", "entityId": "r", "tableId": "t", "userId": "svc", "changes": [{"fieldId": "f", "newValue": 1}]},
        {"type": "create", "entityId": "r", "tableId": "t", "userId": "svc"},
        {"type": "update", "entityType": "field", "entityId": "f", "tableId": "t", "userId": "svc", "version": 0},
    ]});
    let (status, text) = side.http(
        "POST",
        "/api/v1/sync/batch-changes",
        &auth,
        &body.to_string(),
    );
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let statuses: Vec<&str> = v["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "rejected", "applied"]);
}

/// A record rebuilt from the stream: its version, and per field the
/// version of its last change and its value.
type Replayed = (u64, HashMap<String, (u64, Value)>);

/// Stream entries of table `t`: (id, fields).
async fn stream(redis: &RedisServer) -> Vec<(String, HashMap<String, Vec<u8>>)> {
    let mut conn = redis.conn().await;
    let reply: redis::Value = redis::cmd("XRANGE")
        .arg("rts:{t}:events")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    rtsync::store::tailer::entries(reply)
        .into_iter()
        .map(|(id, f)| (id.to_string(), f.into_iter().collect()))
        .collect()
}

#[allow(clippy::too_many_lines)] // one scenario, end to end (predates the 80-line rule)
#[tokio::test(flavor = "multi_thread")]
async fn racing_writers_on_two_sidecars_leave_a_stream_that_replays_to_the_records() {
    let cluster = Cluster::start().await;
    const WRITERS: usize = 24;
    const ROUNDS: usize = 25;
    let records = ["r0", "r1", "r2"];
    let fields = ["f0", "f1", "f2", "f3"];
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let side = if w % 2 == 0 { &cluster.a } else { &cluster.b };
        let mut client = Client::connect(side, &format!("w{w}")).await;
        handles.push(tokio::spawn(async move {
            let mut known: HashMap<&str, u64> = HashMap::new();
            let mut acks = Vec::new();
            for n in 0..ROUNDS {
                let record = records[(w + n) % records.len()];
                let chosen: Vec<Value> = fields
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| (w * 7 + n * 3 + i) % 3 != 0)
                    .map(|(_, f)| json!({"fieldId": f, "newValue": format!("w{w}-n{n}")}))
                    .collect();
                let mut change = json!({"type": "update", "recordId": record, "tableId": "t",
                    "baseId": "b", "changes": chosen});
                if let Some(v) = known.get(record) {
                    change["version"] = json!(v);
                }
                if n % 5 == 4 {
                    change["metadata"] = json!({"onConflict": "reject"});
                }
                let ack = client.request_ok("record_change", change).await;
                let version = ack["status"].as_str().map(|s| {
                    if s == "rejected" {
                        ack["current"]["version"].as_u64()
                    } else {
                        ack["version"].as_u64()
                    }
                });
                if let Some(Some(v)) = version {
                    known.insert(record, v);
                }
                acks.push(ack);
            }
            acks
        }));
    }
    let mut written = Vec::new();
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for h in handles {
        for ack in h.await.unwrap() {
            *statuses
                .entry(ack["status"].as_str().unwrap().to_owned())
                .or_default() += 1;
            if ack["status"] != "rejected" {
                written.push(ack["eventId"].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(
        statuses.get("overwritten").copied().unwrap_or(0) > 0,
        "the race produced conflicts: {statuses:?}"
    );
    let entries = stream(&cluster.redis).await;
    let mut ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        ids.len(),
        written.len(),
        "every acknowledged write once, nothing else"
    );
    ids.sort();
    written.sort();
    assert_eq!(ids, written);

    // Replay: versions strictly increase per record, and the replayed state
    // equals the record hashes field for field.
    let mut replay: HashMap<String, Replayed> = HashMap::new();
    for (_, f) in &entries {
        let record = String::from_utf8(f["entityId"].clone()).unwrap();
        let version: u64 = String::from_utf8(f["version"].clone())
            .unwrap()
            .parse()
            .unwrap();
        let state = replay.entry(record).or_default();
        assert!(version > state.0, "versions increase in stream order");
        state.0 = version;
        let changes: Vec<Value> = serde_json::from_slice(&f["changes"]).unwrap();
        for c in changes {
            state.1.insert(
                c["fieldId"].as_str().unwrap().to_owned(),
                (version, c["newValue"].clone()),
            );
        }
    }
    let mut conn = cluster.redis.conn().await;
    for (record, (version, fields)) in replay {
        let hash: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(format!("rts:{{t}}:rec:{record}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(hash["_v"], version.to_string().into_bytes());
        for (field, (fv, value)) in fields {
            assert_eq!(hash[&format!("v:{field}")], fv.to_string().into_bytes());
            let stored: Value = serde_json::from_slice(&hash[&format!("d:{field}")]).unwrap();
            assert_eq!(stored, value, "{record}.{field}");
        }
    }
}

// v1.3 (docs/protocol.md section 3): a stale write of the value stored
// now is no conflict for that field.

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_write_of_the_value_stored_now_is_merged_without_conflicts() {
    for (_r, _s, mut a, mut b) in both_paths().await {
        a.commit(update("r", &[("status", json!("Todo"))], None))
            .await;
        a.commit(update("r", &[("status", json!("Done"))], Some(1)))
            .await;
        let same = b
            .commit(update("r", &[("status", json!("Done"))], Some(1)))
            .await;
        assert_eq!(same["status"], "merged", "{same}");
        assert!(same.get("conflicts").is_none(), "{same}");
        assert_eq!(same["version"], 3);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_equal_object_value_is_no_conflict_whatever_its_key_order() {
    // The WebSocket path stores each value re-encoded (keys sorted), so two
    // clients' equal objects are the same text.
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "c", &[]).await;
    let mut a = Writer::Ws(Box::new(Client::connect(&side, "alice").await));
    let mut b = Writer::Ws(Box::new(Client::connect(&side, "bob").await));
    a.commit(update("r", &[("tag", json!(null))], None)).await;
    let obj: Value = serde_json::from_str(r#"{"b": 1, "a": [true, "x"]}"#).unwrap();
    a.commit(update("r", &[("tag", obj)], Some(1))).await;
    let reordered: Value = serde_json::from_str(r#"{"a": [true, "x"], "b": 1}"#).unwrap();
    let same = b.commit(update("r", &[("tag", reordered)], Some(1))).await;
    assert_eq!(same["status"], "merged", "{same}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_fields_whose_values_differ_are_conflicts() {
    for (_r, _s, mut a, mut b) in both_paths().await {
        a.commit(update("r", &[("f1", json!(0)), ("f2", json!(0))], None))
            .await;
        a.commit(update(
            "r",
            &[("f1", json!("x")), ("f2", json!("y"))],
            Some(1),
        ))
        .await;
        let over = b
            .commit(update(
                "r",
                &[("f1", json!("x")), ("f2", json!("z"))],
                Some(1),
            ))
            .await;
        assert_eq!(over["status"], "overwritten");
        assert_eq!(
            over["conflicts"],
            json!([{"fieldId": "f2", "theirValue": "y"}])
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_on_conflict_does_not_reject_a_stale_write_of_equal_values() {
    for (_r, _s, mut a, mut b) in both_paths().await {
        a.commit(update("r", &[("f1", json!(1))], None)).await;
        a.commit(update("r", &[("f1", json!(2))], Some(1))).await;
        let mut change = update("r", &[("f1", json!(2))], Some(1));
        change["metadata"] = json!({"onConflict": "reject"});
        let same = b.commit(change).await;
        assert_eq!(same["status"], "merged", "{same}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_equal_write_is_still_a_duplicate() {
    for (_r, _s, mut a, mut b) in both_paths().await {
        a.commit(update("r", &[("f1", json!(1))], None)).await;
        a.commit(update("r", &[("f1", json!(2))], Some(1))).await;
        let mut change = update("r", &[("f1", json!(2))], Some(1));
        change["clientChangeId"] = json!("cc-equal");
        let first = b.commit(change.clone()).await;
        assert_eq!(first["status"], "merged");
        let again = b.commit(change).await;
        assert_eq!(again["status"], "duplicate");
        assert_eq!(again["originalStatus"], "merged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writers_racing_to_the_same_value_on_two_sidecars_see_no_conflicts() {
    // The demo's seed: every pane writes the same rows at version 1.
    let cluster = Cluster::start().await;
    let mut first = Client::connect(&cluster.a, "seed").await;
    for r in 0..10 {
        let mut c = update(&format!("r{r}"), &[("status", json!("Todo"))], None);
        c["tableId"] = json!("t");
        first.request_ok("record_change", c).await;
    }
    let mut handles = Vec::new();
    for w in 0..8 {
        let side = if w % 2 == 0 { &cluster.a } else { &cluster.b };
        let mut client = Client::connect(side, &format!("w{w}")).await;
        handles.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for r in 0..10 {
                let mut c = update(
                    &format!("r{r}"),
                    &[("status", json!("Done")), ("n", json!(r))],
                    Some(1),
                );
                c["tableId"] = json!("t");
                c["metadata"] = json!({"onConflict": "reject"});
                acks.push(client.request_ok("record_change", c).await);
            }
            acks
        }));
    }
    for h in handles {
        for ack in h.await.unwrap() {
            let status = ack["status"].as_str().unwrap();
            assert!(status == "applied" || status == "merged", "{ack}");
            assert!(ack.get("conflicts").is_none(), "{ack}");
        }
    }
}
