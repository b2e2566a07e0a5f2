//! Server-side views (docs/protocol.md 3.5): `PUT
//! /api/v1/sync/tables/:t/views/:v {"filter"}` stores a view's filter at
//! `<p>:{T}:view:<v>` and announces it with a `view` event in the table's
//! stream, which every sidecar applies in stream order and hands to the
//! table's subscribers; `load_records {viewId}` pages only the view's
//! records (and the row grant's). Two sidecars, both encodings, /ws and
//! /socket.io/. With `RTSYNC_TEST_CLUSTER=1` the same tests run on Redis
//! Cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::client::{Client, Enc};
use support::sio::Sio;
use support::tables::{all_pages, ids, two_sidecars, xlen};
use support::tokens::now_secs;
use support::{RedisServer, Sidecar};

/// The view every test stores: the records whose `status` is `open`.
fn open_only() -> Value {
    json!({"field": "status", "op": "eq", "value": "open"})
}

fn put(side: &Sidecar, table: &str, view: &str, body: &Value) -> (u16, Value) {
    side.api(
        "PUT",
        &format!("/api/v1/sync/tables/{table}/views/{view}"),
        body,
    )
}

/// Ten records r0..r9: even ones owned by `ann`, odd ones by `bob`; r0,
/// r1, r2, r3 `open`, the others `done`.
async fn seed_records(writer: &mut Client, table: &str) {
    for i in 0..10 {
        let owner = if i % 2 == 0 { "ann" } else { "bob" };
        let status = if i < 4 { "open" } else { "done" };
        let create = json!({"type": "create", "recordId": format!("r{i}"), "tableId": table,
            "changes": [{"fieldId": "owner", "newValue": owner}, {"fieldId": "status", "newValue": status}]});
        writer.request_ok("record_change", create).await;
    }
}

/// Two sidecars, the table `t` seeded through the first by the returned
/// writer, and the view `open` stored.
async fn seeded_with_open_view(t: &str) -> (RedisServer, Sidecar, Sidecar, Client) {
    let (redis, a, b) = two_sidecars(t).await;
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    assert_eq!(put(&a, t, "open", &json!({"filter": open_only()})).0, 200);
    (redis, a, b, writer)
}

async fn stored(redis: &RedisServer, table: &str, view: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("rts:{{{table}}}:view:{view}"))
        .query_async(&mut redis.conn().await)
        .await
        .unwrap()
}

/// The table's last stream entry, as field → text.
async fn last_entry(redis: &RedisServer, table: &str) -> serde_json::Map<String, Value> {
    let reply: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(format!("rts:{{{table}}}:events"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let (_, fields) = reply.into_iter().next().expect("an entry");
    fields.into_iter().map(|(k, v)| (k, json!(v))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_stores_the_filter_and_announces_it_in_the_tables_stream() {
    let (redis, a, _b) = two_sidecars("vw-put").await;
    let t = "vw-put";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    let before = xlen(&redis, t).await;
    let (status, body) = put(&a, t, "open", &json!({"filter": open_only()}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["viewId"], "open");
    assert_eq!(body["data"]["version"], 1);
    assert_eq!(xlen(&redis, t).await, before + 1);
    let key: Value = serde_json::from_str(&stored(&redis, t, "open").await.unwrap()).unwrap();
    assert_eq!(key, open_only());
    let entry = last_entry(&redis, t).await;
    assert_eq!(entry["type"], "filter");
    assert_eq!(entry["entityType"], "view");
    assert_eq!(entry["entityId"], "open");
    assert_eq!(entry["version"], "1");
    let changes: Value = serde_json::from_str(entry["changes"].as_str().unwrap()).unwrap();
    assert_eq!(
        changes,
        json!([{"fieldId": "filter", "newValue": open_only()}])
    );
    assert_eq!(
        body["data"]["eventId"],
        last_id(&redis, t).await,
        "the answer names the event"
    );
    let (status, got) = a.api(
        "GET",
        &format!("/api/v1/sync/tables/{t}/views/open"),
        &Value::Null,
    );
    assert_eq!(status, 200);
    assert_eq!(
        got["data"],
        json!({"viewId": "open", "filter": open_only(), "version": 1})
    );
}

async fn last_id(redis: &RedisServer, table: &str) -> Value {
    let reply: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(format!("rts:{{{table}}}:events"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    json!(reply[0].0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sidecar_applies_the_view_event_in_stream_order() {
    let (_redis, a, b) = two_sidecars("vw-order").await;
    let t = "vw-order";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    // b serves the table and has read the view as it was: no filter.
    let mut sub = Client::subscribed(&b, "sam", t).await;
    assert_eq!(
        all_pages(&mut sub, json!({"tableId": t, "viewId": "open"}), 500)
            .await
            .len(),
        10
    );
    let edit = |v: &str| {
        json!({"type": "update", "recordId": "r9", "tableId": t,
            "changes": [{"fieldId": "status", "newValue": v}]})
    };
    writer.request_ok("record_change", edit("open")).await;
    assert_eq!(put(&a, t, "open", &json!({"filter": open_only()})).0, 200);
    writer.request_ok("record_change", edit("done")).await;
    let events = sub.changes(3, Duration::from_secs(10)).await;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["entityType"].as_str().unwrap(),
                e["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("record", "update"),
            ("view", "filter"),
            ("record", "update")
        ]
    );
    assert_eq!(events[1]["entityId"], "open");
    assert_eq!(events[1]["changes"][0]["newValue"], open_only());
    for enc_limit in [1, 3, 500] {
        assert_eq!(
            all_pages(&mut sub, json!({"tableId": t, "viewId": "open"}), enc_limit).await,
            ["r0", "r1", "r2", "r3"],
            "b switched to the filter the stream announced"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_filters_are_refused_naming_the_part_and_write_nothing() {
    let (redis, a, _b) = two_sidecars("vw-bad").await;
    let t = "vw-bad";
    let cases = [
        (
            json!({"filter": {"field": "status", "op": "like", "value": 1}}),
            "filter.op",
        ),
        (
            json!({"filter": {"and": [open_only(), {"field": "a", "op": "in", "value": 3}]}}),
            "filter.and[1].value",
        ),
        (json!({"filter": {"or": []}}), "filter.or"),
        (json!({"filter": 3}), "filter"),
        (json!({"filters": open_only()}), "filter"),
        (json!([open_only()]), "filter"),
    ];
    for (body, part) in cases {
        let (status, answer) = put(&a, t, "v", &body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["success"], false);
        assert_eq!(answer["error"]["code"], "bad_request");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(part), "{message} should name {part}");
    }
    let (status, _) = put(&a, t, "bad{id}", &json!({"filter": open_only()}));
    assert_eq!(status, 400, "a view id is checked like other ids");
    assert_eq!(xlen(&redis, t).await, 0);
    assert_eq!(stored(&redis, t, "v").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_without_the_api_token_is_unauthorized_and_writes_nothing() {
    let (redis, a, _b) = two_sidecars("vw-auth").await;
    let t = "vw-auth";
    let body = json!({"filter": open_only()}).to_string();
    let path = format!("/api/v1/sync/tables/{t}/views/v");
    let (status, _) = a.http("PUT", &path, &[], &body);
    assert_eq!(status, 401);
    let wrong = [("Authorization", "Bearer nope")];
    assert_eq!(a.http("PUT", &path, &wrong, &body).0, 401);
    assert_eq!(a.http("GET", &path, &wrong, "").0, 401);
    assert_eq!(xlen(&redis, t).await, 0);
    assert_eq!(stored(&redis, t, "v").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn load_records_with_a_view_pages_only_its_records() {
    let t = "vw-load";
    let (_redis, a, b, _writer) = seeded_with_open_view(t).await;
    for (side, enc) in [(&a, Enc::MsgPack), (&b, Enc::Json)] {
        let claims =
            json!({"sub": "sam", "exp": now_secs() + 3600, "tables": {"*": {"access": "r"}}});
        let mut sam = Client::connect_claims(side, &claims, enc).await;
        for limit in [1, 2, 500] {
            assert_eq!(
                all_pages(&mut sam, json!({"tableId": t, "viewId": "open"}), limit).await,
                ["r0", "r1", "r2", "r3"],
                "limit {limit}"
            );
        }
        let listed = sam
            .request_ok(
                "load_records",
                json!({"tableId": t, "viewId": "open", "recordIds": ["r3", "r4", "r1"]}),
            )
            .await;
        assert_eq!(ids(&listed), ["r3", "r1"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn load_records_with_a_view_under_a_row_grant_pages_both_filters() {
    let t = "vw-rows";
    let (_redis, _a, b, _writer) = seeded_with_open_view(t).await;
    let rows = json!({"access": "rw", "rows": {"field": "owner", "op": "eq", "value": "$user"}});
    let claims = json!({"sub": "ann", "exp": now_secs() + 3600, "tables": {"*": rows}});
    let mut ann = Client::connect_claims(&b, &claims, Enc::MsgPack).await;
    for limit in [1, 500] {
        assert_eq!(
            all_pages(&mut ann, json!({"tableId": t, "viewId": "open"}), limit).await,
            ["r0", "r2"],
            "limit {limit}"
        );
    }
    assert!(!ann.received_bytes(b"bob"), "a row outside the grant left");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_view_is_the_whole_table() {
    let (_redis, a, _b) = two_sidecars("vw-unknown").await;
    let t = "vw-unknown";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    assert_eq!(
        all_pages(
            &mut writer,
            json!({"tableId": t, "viewId": "nobody-made-me"}),
            4
        )
        .await
        .len(),
        10
    );
    let (status, got) = a.api(
        "GET",
        &format!("/api/v1/sync/tables/{t}/views/nobody-made-me"),
        &Value::Null,
    );
    assert_eq!(status, 200);
    assert_eq!(
        got["data"],
        json!({"viewId": "nobody-made-me", "filter": null, "version": 0})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_set_to_null_makes_the_view_the_whole_table_again() {
    let (redis, a, b) = two_sidecars("vw-null").await;
    let t = "vw-null";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    let mut sub = Client::subscribed(&b, "sam", t).await;
    assert_eq!(put(&a, t, "open", &json!({"filter": open_only()})).0, 200);
    sub.changes(1, Duration::from_secs(10)).await;
    assert_eq!(
        all_pages(&mut sub, json!({"tableId": t, "viewId": "open"}), 500)
            .await
            .len(),
        4
    );
    let (status, body) = put(&a, t, "open", &json!({"filter": null}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["version"], 2);
    assert_eq!(stored(&redis, t, "open").await, None, "the key is deleted");
    let events = sub.changes(1, Duration::from_secs(10)).await;
    assert_eq!(
        events[0]["changes"],
        json!([{"fieldId": "filter", "oldValue": open_only()}])
    );
    assert_eq!(
        all_pages(&mut sub, json!({"tableId": t, "viewId": "open"}), 500)
            .await
            .len(),
        10
    );
    let mut other = Client::connect(&a, "kim").await;
    assert_eq!(
        all_pages(&mut other, json!({"tableId": t, "viewId": "open"}), 500)
            .await
            .len(),
        10
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_socketio_load_records_with_a_view_pages_only_its_records() {
    let t = "vw-sio";
    let (_redis, _a, b, _writer) = seeded_with_open_view(t).await;
    let claims = json!({"sub": "sam", "exp": now_secs() + 3600, "tables": {"*": {"access": "r"}}});
    let token = support::tokens::hs256(&claims);
    let mut sio = Sio::connect(&b, &json!({ "token": token })).await;
    let page = sio
        .request(1, "load_records", &json!({"tableId": t, "viewId": "open"}))
        .await
        .expect("an ack");
    assert_eq!(ids(&page), ["r0", "r1", "r2", "r3"]);
    let bad = sio
        .request(2, "load_records", &json!({"tableId": t, "viewId": ""}))
        .await
        .expect("an ack");
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_is_audited_with_its_outcome() {
    let (_redis, a, _b) = two_sidecars("vw-audit").await;
    let t = "vw-audit";
    assert_eq!(put(&a, t, "open", &json!({"filter": open_only()})).0, 200);
    assert_eq!(put(&a, t, "open", &json!({"filter": {"op": 1}})).0, 400);
    let audited = |outcome: &'static str| {
        let a = &a;
        support::wait_for(outcome, Duration::from_secs(10), move || async move {
            let (_, v) = a.api("GET", "/api/v1/audit?action=api_view", &Value::Null);
            v["data"]["entries"]
                .as_array()?
                .iter()
                .find(|e| e["outcome"] == outcome)
                .cloned()
        })
    };
    let ok = audited("ok").await;
    assert_eq!(ok["tableId"], t);
    assert_eq!(ok["actor"], "api");
    assert_eq!(ok["detail"], "view open version 1");
    let refused = audited("bad_request").await;
    assert_eq!(refused["tableId"], t);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_records_route_pages_a_views_records_for_the_user_named() {
    let (_redis, a, _b) = two_sidecars("vw-http").await;
    let t = "vw-http";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    let mine = json!({"and": [open_only(), {"field": "owner", "op": "eq", "value": "$user"}]});
    assert_eq!(put(&a, t, "mine", &json!({"filter": mine})).0, 200);
    let get = |query: &str| {
        let (status, v) = a.api(
            "GET",
            &format!("/api/v1/sync/tables/{t}/records?{query}"),
            &Value::Null,
        );
        assert_eq!(status, 200, "{v}");
        ids(&v["data"])
    };
    assert_eq!(get("viewId=mine&userId=bob"), ["r1", "r3"]);
    assert_eq!(get("viewId=mine&userId=ann&limit=1"), ["r0"]);
    assert!(get("viewId=mine").is_empty(), "$user is nobody");
    assert_eq!(get("viewId=unknown").len(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_socketio_a_subscriber_receives_the_view_event() {
    let (_redis, a, b) = two_sidecars("vw-sio-ev").await;
    let t = "vw-sio-ev";
    let claims = json!({"sub": "sam", "exp": now_secs() + 3600, "tables": {"*": {"access": "r"}}});
    let token = support::tokens::hs256(&claims);
    let mut sio = Sio::connect(&b, &json!({ "token": token })).await;
    let ack = sio
        .request(1, "subscribe_to_table", &json!({"tableId": t}))
        .await
        .expect("an ack");
    assert!(ack.get("error").is_none(), "{ack}");
    assert_eq!(put(&a, t, "open", &json!({"filter": open_only()})).0, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut got = None;
    while got.is_none() && tokio::time::Instant::now() < deadline {
        for (name, data) in sio.events(Duration::from_millis(500)).await {
            let list = match name.as_str() {
                "record_change" => vec![data],
                "batch_changes" => data.as_array().cloned().unwrap_or_default(),
                _ => continue,
            };
            got = got.or(list.into_iter().find(|e| e["entityType"] == "view"));
        }
    }
    let e = got.expect("the view event");
    assert_eq!(e["entityId"], "open");
    assert_eq!(e["type"], "filter");
    assert_eq!(e["userId"], "api");
    assert_eq!(e["changes"][0]["newValue"], open_only());
}

#[tokio::test(flavor = "multi_thread")]
async fn rtsync_view_set_refuses_a_filter_that_is_not_an_object_and_writes_nothing() {
    let (redis, _a, _b) = two_sidecars("vw-lua").await;
    let t = "vw-lua";
    let keys = [
        format!("rts:{{{t}}}:events"),
        format!("rts:{{{t}}}:view:v"),
        format!("rts:{{{t}}}:ver"),
        format!("rts:{{{t}}}:sink-floor"),
        format!("rts:{{{t}}}:presence"),
    ];
    let header = json!({"viewId": "v", "userId": "svc", "tableId": t}).to_string();
    let refused: redis::RedisResult<redis::Value> = redis::cmd("FCALL")
        .arg("rtsync_view_set")
        .arg(5)
        .arg(&keys[..])
        .arg(&header)
        .arg("[1]")
        .query_async(&mut redis.conn().await)
        .await;
    let e = refused.expect_err("refused");
    assert_eq!(e.code(), Some("RTSYNC_INVALID"), "{e}");
    assert_eq!(xlen(&redis, t).await, 0);
    let applied: Vec<redis::Value> = redis::cmd("FCALL")
        .arg("rtsync_view_set")
        .arg(5)
        .arg(&keys[..])
        .arg(&header)
        .arg(open_only().to_string())
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(applied.len(), 2);
    assert_eq!(xlen(&redis, t).await, 1);
}

/// The record events (`record_change`, `record_entered_view`,
/// `record_left_view`) `c` receives until one is about `last`, as
/// (frame name, record id).
async fn record_frames(c: &mut Client, last: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        let (name, data, _) = c
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no frame about {last}; got {out:?}"));
        let record = match name.as_str() {
            "record_change" if data["entityType"] == "record" => data["entityId"].clone(),
            "record_entered_view" => data["record"]["recordId"].clone(),
            "record_left_view" => data["recordId"].clone(),
            _ => continue,
        };
        let record = record.as_str().unwrap_or_default().to_owned();
        let done = record == last;
        out.push((name, record));
        if done {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_view_subscriber_gets_its_records_live_with_enter_and_leave_intersected_with_its_row_grant(
) {
    let t = "vw-live";
    let (_redis, a, b, mut writer) = seeded_with_open_view(t).await;
    let mut sam = Client::connect(&b, "sam").await;
    sam.request_ok(
        "subscribe_to_table",
        json!({"tableId": t, "viewId": "open"}),
    )
    .await;
    let rows = json!({"access": "rw", "rows": {"field": "owner", "op": "eq", "value": "$user"}});
    let claims = json!({"sub": "ann", "exp": now_secs() + 3600, "tables": {"*": rows}});
    let mut ann = Client::connect_claims(&a, &claims, Enc::MsgPack).await;
    ann.request_ok(
        "subscribe_to_table",
        json!({"tableId": t, "viewId": "open"}),
    )
    .await;
    let set = |r: &str, f: &str, v: &str| {
        json!({"type": "update", "recordId": r, "tableId": t,
            "changes": [{"fieldId": f, "newValue": v}]})
    };
    for (r, f, v) in [
        ("r5", "status", "open"),
        ("r4", "status", "open"),
        ("r0", "status", "done"),
        ("r6", "note", "x"),
        ("r1", "note", "y"),
        ("r2", "note", "last"),
    ] {
        writer.request_ok("record_change", set(r, f, v)).await;
    }
    let name = |n: &str, r: &str| (n.to_owned(), r.to_owned());
    assert_eq!(
        record_frames(&mut sam, "r2").await,
        [
            name("record_entered_view", "r5"),
            name("record_entered_view", "r4"),
            name("record_left_view", "r0"),
            name("record_change", "r1"),
            name("record_change", "r2"),
        ]
    );
    assert_eq!(
        record_frames(&mut ann, "r2").await,
        [
            name("record_entered_view", "r4"),
            name("record_left_view", "r0"),
            name("record_change", "r2"),
        ],
        "the view ∩ ann's rows"
    );
    let sam_page = sam
        .request_ok("load_records", json!({"tableId": t, "viewId": "open"}))
        .await;
    assert_eq!(ids(&sam_page), ["r1", "r2", "r3", "r4", "r5"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_views_filter_changed_while_subscribed_filters_the_events_after_its_view_event() {
    let t = "vw-switch";
    let (_redis, a, b, mut writer) = seeded_with_open_view(t).await;
    let mut sam = Client::connect(&b, "sam").await;
    sam.request_ok(
        "subscribe_to_table",
        json!({"tableId": t, "viewId": "open"}),
    )
    .await;
    let done = json!({"field": "status", "op": "eq", "value": "done"});
    assert_eq!(put(&a, t, "open", &json!({"filter": done})).0, 200);
    let view_event = sam
        .take(|(e, d, _)| e == "record_change" && d["entityType"] == "view")
        .await
        .expect("the view event");
    assert_eq!(view_event.1["changes"][0]["newValue"]["value"], "done");
    let note = |r: &str, v: &str| {
        json!({"type": "update", "recordId": r, "tableId": t,
            "changes": [{"fieldId": "note", "newValue": v}]})
    };
    for (r, v) in [("r1", "a"), ("r5", "b"), ("r6", "last")] {
        writer.request_ok("record_change", note(r, v)).await;
    }
    let name = |n: &str, r: &str| (n.to_owned(), r.to_owned());
    assert_eq!(
        record_frames(&mut sam, "r6").await,
        [name("record_change", "r5"), name("record_change", "r6")],
        "the new filter: done records only"
    );
    let page = sam
        .request_ok("load_records", json!({"tableId": t, "viewId": "open"}))
        .await;
    assert_eq!(ids(&page), ["r4", "r5", "r6", "r7", "r8", "r9"]);
}
