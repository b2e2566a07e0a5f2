//! Field-level grants (docs/protocol.md 2.1): hidden fields never leave the
//! sidecar on any read path, and writes to fields a user may not write are
//! refused before anything is written. Two sidecars, both encodings; the
//! whole file runs again on the cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::client::{change, Client, Enc};
use support::tokens::{claims, now_secs};
use support::{metric, stream_ids, RedisServer, Sidecar};

/// A salary as it is written: a string, so its bytes are the same in
/// MessagePack and JSON, and a test can look for them in raw frames.
const SECRET: &str = "SALARY-918273645";
const WAIT: Duration = Duration::from_secs(10);

/// Cannot see `salary`, cannot edit `status`.
fn intern() -> Value {
    json!({"access": "rw", "fields": {"salary": "none", "status": "r"}})
}

fn grant_claims(user: &str, table_grant: Value) -> Value {
    json!({"sub": user, "exp": now_secs() + 3600, "tables": {"*": table_grant}})
}

async fn two_sidecars(prefix: &str) -> (RedisServer, Sidecar, Sidecar) {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, &format!("{prefix}-a"), &[]).await;
    let b = Sidecar::start(&redis, &format!("{prefix}-b"), &[]).await;
    (redis, a, b)
}

async fn connect(side: &Sidecar, user: &str, grant: Value, enc: Enc) -> Client {
    Client::connect_claims(side, &grant_claims(user, grant), enc).await
}

async fn subscribe(c: &mut Client, table: &str) -> Value {
    c.request_ok(
        "subscribe_to_table",
        json!({"tableId": table, "viewId": "v"}),
    )
    .await
}

/// A change of several fields of one record.
fn edit(kind: &str, table: &str, record: &str, fields: &[(&str, Value)]) -> Value {
    let changes: Vec<Value> = fields
        .iter()
        .map(|(f, v)| json!({"fieldId": f, "newValue": v}))
        .collect();
    json!({"type": kind, "recordId": record, "tableId": table, "baseId": "b1", "changes": changes})
}

fn field_ids(event: &Value) -> Vec<String> {
    event["changes"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| c["fieldId"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// No frame ever carried a salary's bytes. (The hidden field's id does
/// reach the intern, in its own grant in the subscribe ack.)
fn assert_never_received(c: &Client, who: &str) {
    assert!(
        !c.received_bytes(SECRET.as_bytes()),
        "{who} received a salary value"
    );
}

/// Writes three events: salary and name, salary alone, a create with all.
async fn write_salaries(writer: &mut Client, table: &str) -> Vec<Value> {
    let mut acks = Vec::new();
    for e in [
        edit(
            "create",
            table,
            "r1",
            &[
                ("name", json!("Ann")),
                ("salary", json!(SECRET)),
                ("status", json!("new")),
            ],
        ),
        edit("update", table, "r1", &[("salary", json!(SECRET))]),
        edit(
            "update",
            table,
            "r1",
            &[("name", json!("Ann B")), ("salary", json!(SECRET))],
        ),
    ] {
        acks.push(writer.request_ok("record_change", e).await);
    }
    acks
}

#[tokio::test(flavor = "multi_thread")]
async fn an_intern_never_receives_a_salary_byte_while_hr_receives_every_field() {
    let (_redis, a, b) = two_sidecars("fg-live").await;
    let t = "fg-live";
    let mut hr = Client::connect(&b, "hr").await;
    subscribe(&mut hr, t).await;
    let mut interns = vec![
        connect(&b, "intern1", intern(), Enc::MsgPack).await,
        connect(&b, "intern2", intern(), Enc::Json).await,
        connect(&a, "intern3", intern(), Enc::MsgPack).await,
        connect(&a, "intern4", intern(), Enc::Json).await,
    ];
    for c in &mut interns {
        subscribe(c, t).await;
    }
    let mut writer = Client::connect(&a, "writer").await;
    let acks = write_salaries(&mut writer, t).await;

    let full = hr.changes(3, WAIT).await;
    assert_eq!(full.len(), 3);
    assert!(full
        .iter()
        .all(|e| field_ids(e).contains(&"salary".to_owned())));
    for (n, c) in interns.iter_mut().enumerate() {
        let seen = c.changes(3, WAIT).await;
        assert_eq!(seen.len(), 3, "intern {n} gets every event");
        for (e, ack) in seen.iter().zip(&acks) {
            assert_eq!(e["id"], ack["eventId"], "stream order, none skipped");
            assert_eq!(e["version"], ack["version"], "the record's version");
        }
        assert_eq!(field_ids(&seen[0]), vec!["name", "status"]);
        assert_eq!(
            seen[1]["changes"],
            json!([]),
            "all hidden: no changes, still sent"
        );
        assert_eq!(field_ids(&seen[2]), vec!["name"]);
        assert_never_received(c, &format!("intern {n}"));
    }
    let text = b.get("/metrics").1;
    assert!(
        metric(
            &text,
            "rtsync_fanout_frames_built_total{audience=\"masked\"}"
        ) >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recent_changes_and_recovery_are_masked() {
    let (_redis, a, b) = two_sidecars("fg-hist").await;
    let t = "fg-hist";
    let mut writer = Client::connect(&a, "writer").await;
    let acks = write_salaries(&mut writer, t).await;
    for enc in [Enc::MsgPack, Enc::Json] {
        let mut c = connect(&b, "intern", intern(), enc).await;
        subscribe(&mut c, t).await;
        let recent = c.expect_event("recent_changes").await;
        let recent = recent.as_array().unwrap();
        assert_eq!(recent.len(), 3);
        assert_eq!(recent[1]["changes"], json!([]));
        assert_never_received(&c, "a subscriber's recent_changes");

        let mut r = connect(&b, "intern-r", intern(), enc).await;
        let first = acks[0]["eventId"].as_str().unwrap();
        r.request_ok(
            "recover_connection",
            json!({"tableId": t, "lastEventId": first}),
        )
        .await;
        let missed = r.all_events(2, WAIT).await;
        assert_eq!(missed.len(), 2);
        assert_eq!(missed[0]["changes"], json!([]));
        assert_eq!(field_ids(&missed[1]), vec!["name"]);
        r.expect_event("connection_recovered").await;
        assert_never_received(&r, "a recovery");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn load_records_is_masked_by_page_and_by_ids() {
    let (_redis, a, b) = two_sidecars("fg-load").await;
    let t = "fg-load";
    let mut writer = Client::connect(&a, "writer").await;
    write_salaries(&mut writer, t).await;
    let mut c = connect(&b, "intern", intern(), Enc::Json).await;
    let page = c.request_ok("load_records", json!({"tableId": t})).await;
    let by_ids = c
        .request_ok("load_records", json!({"tableId": t, "recordIds": ["r1"]}))
        .await;
    for p in [&page, &by_ids] {
        let record = &p["records"][0];
        assert_eq!(record["fields"], json!({"name": "Ann B", "status": "new"}));
        assert_eq!(record["version"], 3);
    }
    assert_never_received(&c, "load_records");
    let mut hr = Client::connect(&b, "hr").await;
    let full = hr.request_ok("load_records", json!({"tableId": t})).await;
    assert_eq!(full["records"][0]["fields"]["salary"], SECRET);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_to_fields_the_user_may_not_write_are_forbidden_and_write_nothing() {
    let (redis, a, _b) = two_sidecars("fg-write").await;
    let t = "fg-write";
    let mut writer = Client::connect(&a, "writer").await;
    write_salaries(&mut writer, t).await;
    let mut conn = redis.conn().await;
    for enc in [Enc::MsgPack, Enc::Json] {
        let mut c = connect(&a, "intern", intern(), enc).await;
        let refused = [
            (edit("update", t, "r1", &[("salary", json!(1))]), "salary"),
            (
                edit("update", t, "r1", &[("status", json!("done"))]),
                "status",
            ),
            (
                edit(
                    "update",
                    t,
                    "r1",
                    &[("name", json!("x")), ("salary", json!(1))],
                ),
                "salary",
            ),
            (
                edit(
                    "create",
                    t,
                    "r2",
                    &[("name", json!("y")), ("status", json!("new"))],
                ),
                "status",
            ),
        ];
        let before = stream_ids(&mut conn, t).await.len();
        for (change, field) in refused {
            let err = c
                .request("record_change", change.clone())
                .await
                .unwrap_err();
            assert_eq!(err["code"], "forbidden", "{change}");
            let message = err["message"].as_str().unwrap();
            assert!(message.contains(&format!("field {field}")), "{message}");
        }
        assert_eq!(
            stream_ids(&mut conn, t).await.len(),
            before,
            "nothing written"
        );
        let ok = c
            .request_ok(
                "record_change",
                edit("update", t, "r1", &[("name", json!("ok"))]),
            )
            .await;
        assert_eq!(ok["status"], "applied");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_needs_write_access_to_the_table_not_to_every_field() {
    let (_redis, a, _b) = two_sidecars("fg-del").await;
    let t = "fg-del";
    let mut writer = Client::connect(&a, "writer").await;
    write_salaries(&mut writer, t).await;
    let delete = json!({"type": "delete", "recordId": "r1", "tableId": t, "baseId": "b1"});
    let reader = json!({"access": "r", "fields": {"name": "rw"}});
    let mut c = connect(&a, "reader", reader, Enc::Json).await;
    let err = c
        .request("record_change", delete.clone())
        .await
        .unwrap_err();
    assert_eq!(err["code"], "forbidden");
    let editor = json!({"access": "rw", "fields": {"*": "r"}});
    let mut c = connect(&a, "editor", editor, Enc::Json).await;
    assert_eq!(
        c.request_ok("record_change", delete).await["status"],
        "applied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_batch_with_one_forbidden_change_commits_the_others() {
    let (redis, a, b) = two_sidecars("fg-off").await;
    let t = "fg-off";
    let mut writer = Client::connect(&a, "writer").await;
    write_salaries(&mut writer, t).await;
    let mut watcher = Client::connect(&a, "hr").await;
    subscribe(&mut watcher, t).await;
    let mut c = connect(&b, "intern", intern(), Enc::MsgPack).await;
    let item = |id: &str, field: &str, value: Value| {
        json!({"type": "update", "entityId": "r1", "tableId": t, "baseId": "b1",
            "changes": [{"fieldId": field, "newValue": value}], "clientChangeId": id})
    };
    let before = stream_ids(&mut redis.conn().await, t).await.len();
    let ack = c
        .request_ok(
            "sync_offline_changes",
            json!([
                item("c1", "name", json!("one")),
                item("c2", "salary", json!(5)),
                item("c3", "name", json!("three"))
            ]),
        )
        .await;
    assert_eq!(
        (ack["applied"].as_u64(), ack["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    let results = ack["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "applied");
    assert_eq!(results[1]["status"], "rejected");
    assert_eq!(results[1]["error"]["code"], "forbidden");
    assert_eq!(results[2]["status"], "applied");
    let offline = c.expect_event("offline_changes").await;
    assert_eq!(offline["events"].as_array().unwrap().len(), 2);
    assert_eq!(offline["rejected"][0]["clientChangeId"], "c2");
    assert_eq!(
        stream_ids(&mut redis.conn().await, t).await.len(),
        before + 2
    );
    assert_eq!(watcher.changes(2, WAIT).await.len(), 2);
    assert_never_received(&c, "an offline sync's answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejections_current_and_conflicts_are_masked() {
    let (_redis, a, b) = two_sidecars("fg-rej").await;
    let t = "fg-rej";
    let mut writer = Client::connect(&a, "writer").await;
    write_salaries(&mut writer, t).await;
    let mut c = connect(&b, "intern", intern(), Enc::Json).await;
    let result = c
        .request_ok(
            "record_change",
            edit("create", t, "r1", &[("name", json!("dup"))]),
        )
        .await;
    assert_eq!(result["status"], "rejected");
    assert_eq!(
        result["current"]["fields"],
        json!({"name": "Ann B", "status": "new"})
    );
    // A stale update that conflicts: its `conflicts` list the readable
    // fields only (the writer changed name and salary since version 1).
    let mut stale = edit("update", t, "r1", &[("name", json!("mine"))]);
    stale["version"] = json!(1);
    let result = c.request_ok("record_change", stale).await;
    assert_eq!(result["status"], "overwritten");
    assert!(result["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["fieldId"] == "name"));
    let offline = json!([{"type": "create", "entityId": "r1", "tableId": t, "baseId": "b1",
        "changes": [{"fieldId": "name", "newValue": "again"}], "clientChangeId": "x1"}]);
    let ack = c.request_ok("sync_offline_changes", offline).await;
    assert_eq!(ack["results"][0]["status"], "rejected");
    assert!(ack["results"][0]["current"]["fields"].get("name").is_some());
    assert_never_received(&c, "a rejection");
}

#[tokio::test(flavor = "multi_thread")]
async fn cursors_on_hidden_fields_are_not_relayed_to_the_class_that_cannot_see_them() {
    let (_redis, a, b) = two_sidecars("fg-cur").await;
    let t = "fg-cur";
    let mut hr = Client::connect(&a, "hr").await;
    subscribe(&mut hr, t).await;
    let mut watcher = Client::connect(&b, "hr2").await;
    subscribe(&mut watcher, t).await;
    let mut c = connect(&b, "intern", intern(), Enc::MsgPack).await;
    subscribe(&mut c, t).await;
    let cursor =
        |field: &str| json!({"tableId": t, "cursor": {"recordId": "r1", "fieldId": field}});
    hr.request_ok("cursor_position", cursor("salary")).await;
    // The full-access watcher sees it; then a later cursor on a visible
    // field reaches both, so the intern's stream has passed the first.
    watcher
        .take(|(e, d, _)| e == "cursor_position" && d["cursor"]["fieldId"] == "salary")
        .await
        .expect("hr2 sees the cursor on salary");
    // Then cursors on a visible field, until one reaches the intern (the
    // relay holds a user's updates to its rate): the first the intern ever
    // gets is on `name`, never the one on `salary` before it.
    let mut tries = 0;
    let first = loop {
        tries += 1;
        assert!(
            tries <= 50,
            "no cursor on a visible field reached the intern"
        );
        hr.request_ok("cursor_position", cursor("name")).await;
        if let Some((_, d, _)) = c
            .take_within(Duration::from_millis(200), |(e, _, _)| {
                e == "cursor_position"
            })
            .await
        {
            break d;
        }
    };
    assert_eq!(first["cursor"]["fieldId"], "name");
    // A user who joins later gets table_users without the hidden cursor.
    hr.request_ok("cursor_position", cursor("salary")).await;
    watcher
        .take(|(e, d, _)| e == "cursor_position" && d["cursor"]["fieldId"] == "salary")
        .await
        .expect("hr2 sees the second cursor on salary");
    let mut late = connect(&b, "intern2", intern(), Enc::Json).await;
    subscribe(&mut late, t).await;
    let users = late.expect_event("table_users").await;
    let hr_user = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == "hr")
        .unwrap();
    assert!(hr_user.get("cursor").is_none(), "{hr_user}");
    assert_never_received(&c, "cursor relays");
    assert_never_received(&late, "table_users");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_grants_are_unauthenticated_with_a_message_naming_them() {
    let (_redis, a, _b) = two_sidecars("fg-bad").await;
    let cases = [
        (json!({"t1": "write"}), "tables.t1"),
        (
            json!({"t1": {"access": "rw", "fields": {"salary": "hidden"}}}),
            "tables.t1.fields.salary",
        ),
        (json!({"t1": {"access": "x"}}), "tables.t1.access"),
        (json!({"t1": {"access": "r", "feilds": {}}}), "feilds"),
    ];
    for (tables, needle) in cases {
        let mut c = Client::open(&a, None, &[], "").await;
        let claims = json!({"sub": "u", "exp": now_secs() + 3600, "tables": tables});
        let token = support::tokens::hs256(&claims);
        let err = c
            .request("authenticate", json!({"token": token}))
            .await
            .unwrap_err();
        assert_eq!(err["code"], "unauthenticated");
        assert!(err["message"].as_str().unwrap().contains(needle), "{err}");
        assert_eq!(c.closed().await, Some(4401));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn string_grants_work_as_in_v1_and_the_ack_reports_the_effective_grant() {
    let (_redis, a, _b) = two_sidecars("fg-v1").await;
    let t = "fg-v1";
    let mut writer = Client::connect(&a, "writer").await;
    let ack = subscribe(&mut writer, t).await;
    assert_eq!(ack["access"], "rw");
    assert!(ack.get("fields").is_none());
    let mut reader = Client::connect_claims(
        &a,
        &json!({"sub": "r", "exp": now_secs() + 3600, "tables": {t: "r"}}),
        Enc::MsgPack,
    )
    .await;
    assert_eq!(subscribe(&mut reader, t).await["access"], "r");
    let err = reader
        .request("record_change", change(t, "r1", "name", json!("x")))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "forbidden");
    let mut c = connect(&a, "intern", intern(), Enc::Json).await;
    let ack = subscribe(&mut c, t).await;
    assert_eq!(
        ack["fields"],
        json!({"*": "rw", "salary": "none", "status": "r"})
    );
    writer
        .request_ok(
            "record_change",
            edit("create", t, "r1", &[("salary", json!(SECRET))]),
        )
        .await;
    let full = reader.changes(1, WAIT).await;
    assert_eq!(full[0]["changes"][0]["newValue"], SECRET);
    let _ = claims("unused");
}

#[tokio::test(flavor = "multi_thread")]
async fn development_authenticate_may_carry_field_grants() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(
        &redis,
        "fg-dev",
        &[("RTS_AUTH", "none"), ("RTS_JWT_SECRET", "")],
    )
    .await;
    let t = "fg-dev";
    let mut c = Client::open(&side, Some("rtsync.v1.json"), &[], "").await;
    c.request_ok(
        "authenticate",
        json!({"userId": "intern", "userName": "Intern", "tables": {"*": intern()}}),
    )
    .await;
    let ack = subscribe(&mut c, t).await;
    assert_eq!(ack["fields"]["salary"], "none");
    let mut w = Client::open(&side, None, &[], "").await;
    w.request_ok("authenticate", json!({"userId": "w", "userName": "W"}))
        .await;
    w.request_ok(
        "record_change",
        edit(
            "create",
            t,
            "r1",
            &[("salary", json!(SECRET)), ("name", json!("n"))],
        ),
    )
    .await;
    let seen = c.changes(1, WAIT).await;
    assert_eq!(field_ids(&seen[0]), vec!["name"]);
    let mut bad = Client::open(&side, None, &[], "").await;
    let err = bad
        .request(
            "authenticate",
            json!({"userId": "x", "tables": {"*": "all"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(err["code"], "unauthenticated");
}

/// The version rule over masked events: four writers (two per sidecar)
/// edit five records' visible and hidden fields at once; an intern who
/// applies each record event whose version is newer than the one it holds
/// ends with exactly the masked state `load_records` returns.
#[tokio::test(flavor = "multi_thread")]
async fn empty_change_events_keep_the_version_rule_under_four_writers() {
    let (_redis, a, b) = two_sidecars("fg-conv").await;
    let t = "fg-conv";
    let mut c = connect(&b, "intern", intern(), Enc::MsgPack).await;
    subscribe(&mut c, t).await;
    let mut writers = Vec::new();
    for (n, side) in [&a, &b, &a, &b].into_iter().enumerate() {
        let mut w = Client::connect(side, &format!("w{n}")).await;
        w.request_ok("subscribe_to_table", json!({"tableId": t, "viewId": "v"}))
            .await;
        writers.push(w);
    }
    let mut tasks = Vec::new();
    for (n, mut w) in writers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                let record = format!("r{}", (i + n) % 5);
                let field = ["name", "salary", "status", "salary", "notes"][(i * 7 + n) % 5];
                let value = if field == "salary" {
                    json!(SECRET)
                } else {
                    json!(format!("{n}-{i}"))
                };
                w.request_ok("record_change", change(t, &record, field, value))
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = c.changes(120, Duration::from_secs(30)).await;
    assert_eq!(events.len(), 120);
    let mut state: HashMap<String, (u64, serde_json::Map<String, Value>)> = HashMap::new();
    for e in &events {
        let held = state
            .entry(e["entityId"].as_str().unwrap().to_owned())
            .or_default();
        let version = e["version"].as_u64().unwrap();
        assert!(version > held.0, "versions of one record increase: {e}");
        held.0 = version;
        for ch in e["changes"].as_array().unwrap() {
            held.1.insert(
                ch["fieldId"].as_str().unwrap().to_owned(),
                ch["newValue"].clone(),
            );
        }
    }
    let page = c.request_ok("load_records", json!({"tableId": t})).await;
    for record in page["records"].as_array().unwrap() {
        let id = record["recordId"].as_str().unwrap();
        let (version, fields) = &state[id];
        assert_eq!(record["version"].as_u64(), Some(*version), "{id}");
        assert_eq!(&record["fields"], &Value::Object(fields.clone()), "{id}");
    }
    assert_eq!(page["records"].as_array().unwrap().len(), 5);
    assert_never_received(&c, "the converging intern");
}
