//! The table's state with versions (v1.1): `load_records` pages and the
//! HTTP routes, the seed route, and convergence by the version rule while
//! writers keep writing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The undo check reads the stream directly, as an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use support::client::{change, Client};
use support::{Cluster, RedisServer, Sidecar};

const LONG: Duration = Duration::from_secs(30);
const AUTH: (&str, &str) = ("Authorization", "Bearer test-api-token-0123");

/// Every page of `table` through `load_records`, with `limit`.
async fn all_records(c: &mut Client, table: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut req = json!({"tableId": table, "limit": limit});
        if let Some(a) = &after {
            req["after"] = json!(a);
        }
        let page = c.request_ok("load_records", req).await;
        out.extend(page["records"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn load_records_pages_in_record_id_order_with_versions_and_deletes() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&side, "u").await;
    for n in 0..25 {
        let r = format!("r{n:02}");
        c.request_ok("record_change", change("t", &r, "f", json!(n)))
            .await;
        if n % 5 == 0 {
            c.request_ok("record_change", change("t", &r, "g", json!({"n": n})))
                .await;
        }
        if n % 7 == 0 {
            let mut d = change("t", &r, "f", json!(null));
            d["type"] = json!("delete");
            c.request_ok("record_change", d).await;
        }
    }
    let records = all_records(&mut c, "t", 10).await;
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r["recordId"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..25).map(|n| format!("r{n:02}")).collect();
    assert_eq!(ids, want, "every record once, in id order");
    for (n, r) in records.iter().enumerate() {
        let writes = 1 + u64::from(n % 5 == 0) + u64::from(n % 7 == 0);
        assert_eq!(r["version"], writes, "{r}");
        assert_eq!(r["deleted"], n % 7 == 0, "{r}");
        assert_eq!(r["fields"]["f"], n, "{r}");
    }
    // A list of ids, in the order given; unknown ones are left out.
    let page = c
        .request_ok(
            "load_records",
            json!({"tableId": "t", "recordIds": ["r05", "nope", "r01"]}),
        )
        .await;
    let got: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recordId"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["r05", "r01"]);
    assert_eq!(page["records"][0]["fields"]["g"], json!({"n": 5}));
    let last = support::stream_ids(&mut redis.conn().await, "t").await;
    assert_eq!(page["asOf"].as_str(), last.last().map(String::as_str));
    // The backend route answers the same pages.
    let (status, body) = side.http(
        "GET",
        "/api/v1/sync/tables/t/records?limit=10&after=r09",
        &[AUTH],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["data"]["records"][0]["recordId"], "r10");
    assert_eq!(body["data"]["next"], "r19");
    let (status, _) = side.http("GET", "/api/v1/sync/tables/t/records", &[], "");
    assert_eq!(status, 401, "the API token is required");
    // Limits and bad input.
    for bad in [
        json!({"tableId": "t", "limit": 0}),
        json!({"tableId": "t", "limit": 1001}),
        json!({"tableId": "t\u{202e}"}),
    ] {
        let err = c.request("load_records", bad).await.unwrap_err();
        assert_eq!(err["code"], "bad_request", "{err}");
    }
    let too_many: Vec<String> = (0..1001).map(|n| format!("r{n}")).collect();
    let err = c
        .request(
            "load_records",
            json!({"tableId": "t", "recordIds": too_many}),
        )
        .await
        .unwrap_err();
    assert_eq!(err["code"], "payload_too_large");
}

#[tokio::test(flavor = "multi_thread")]
async fn load_records_needs_read_access() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::open(&side, None, &[], "").await;
    let mut claims = support::tokens::claims("limited");
    claims["tables"] = json!({"mine": "r"});
    c.request_ok(
        "authenticate",
        json!({"token": support::tokens::hs256(&claims)}),
    )
    .await;
    c.request_ok("load_records", json!({"tableId": "mine"}))
        .await;
    let err = c
        .request("load_records", json!({"tableId": "other"}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "forbidden");
}

fn seed(side: &Sidecar, table: &str, records: Value) -> (u16, Value) {
    let (status, body) = side.http(
        "POST",
        &format!("/api/v1/sync/tables/{table}/records"),
        &[AUTH],
        &json!({ "records": records }).to_string(),
    );
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_writes_only_newer_versions_and_appends_no_event() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&side, "u").await;
    let (status, body) = seed(
        &side,
        "t",
        json!([
            {"recordId": "r1", "version": 5, "fields": {"name": "Ada", "n": 9007199254740993u64, "m": {}}},
            {"recordId": "r2", "version": 1, "fields": {}, "deleted": true},
        ]),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({"written": 2, "skipped": 0}));
    let page = c
        .request_ok(
            "load_records",
            json!({"tableId": "t", "recordIds": ["r1", "r2"]}),
        )
        .await;
    assert_eq!(
        page["records"][0],
        json!({"recordId": "r1", "version": 5, "deleted": false,
               "fields": {"name": "Ada", "n": 9007199254740993u64, "m": {}}})
    );
    assert_eq!(page["records"][1]["deleted"], true);
    assert_eq!(
        support::stream_ids(&mut redis.conn().await, "t")
            .await
            .len(),
        0,
        "no event"
    );
    // Clients edit on top of the app's versions.
    let mut edit = change("t", "r1", "name", json!("Grace"));
    edit["version"] = json!(5);
    let ack = c.request_ok("record_change", edit).await;
    assert_eq!(
        (ack["status"].as_str(), ack["version"].as_u64()),
        (Some("applied"), Some(6))
    );
    // An older or equal seed never overwrites a newer edit.
    let (_, body) = seed(
        &side,
        "t",
        json!([{"recordId": "r1", "version": 6, "fields": {"name": "stale"}}]),
    );
    assert_eq!(body["data"], json!({"written": 0, "skipped": 1}));
    let (_, body) = seed(
        &side,
        "t",
        json!([{"recordId": "r1", "version": 8, "fields": {"name": "Lovelace"}}]),
    );
    assert_eq!(body["data"], json!({"written": 1, "skipped": 0}));
    let page = c
        .request_ok("load_records", json!({"tableId": "t", "recordIds": ["r1"]}))
        .await;
    assert_eq!(page["records"][0]["fields"], json!({"name": "Lovelace"}));
    assert_eq!(page["records"][0]["version"], 8);
    // Over RTS_MAX_BATCH (1000) records: 413, nothing written.
    let many: Vec<Value> = (0..1001)
        .map(|n| json!({"recordId": format!("m{n}"), "version": 1}))
        .collect();
    let (status, body) = seed(&side, "t", json!(many));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    // Bad seeds write nothing.
    for bad in [
        json!([{"recordId": "r9", "version": 0, "fields": {}}]),
        json!([{"recordId": "r{9}", "version": 1, "fields": {}}]),
        json!([{"recordId": "r9", "version": 1, "fields": {"a\u{200b}": 1}}]),
        json!([{"recordId": "r9", "version": 1, "nope": 1}]),
    ] {
        let (status, body) = seed(&side, "t", bad);
        assert_eq!(status, 400, "{body}");
    }
    let page = c
        .request_ok("load_records", json!({"tableId": "t", "recordIds": ["r9"]}))
        .await;
    assert_eq!(page["records"], json!([]));
}

/// A client's copy of one record.
#[derive(Clone, Debug, PartialEq)]
struct Held {
    version: u64,
    deleted: bool,
    fields: Map<String, Value>,
}

fn held_of(state: &Value) -> Held {
    Held {
        version: state["version"].as_u64().unwrap(),
        deleted: state["deleted"].as_bool().unwrap(),
        fields: state["fields"].as_object().cloned().unwrap_or_default(),
    }
}

/// Applies a record event on top of `held` (the commit's semantics).
fn apply(held: Option<&Held>, event: &Value) -> Held {
    let mut next = held.cloned().unwrap_or(Held {
        version: 0,
        deleted: false,
        fields: Map::new(),
    });
    next.version = event["version"].as_u64().unwrap();
    match event["type"].as_str().unwrap() {
        "delete" => next.deleted = true,
        kind => {
            if kind == "create" && next.deleted {
                next.fields.clear();
            }
            next.deleted = false;
            for c in event["changes"].as_array().into_iter().flatten() {
                let f = c["fieldId"].as_str().unwrap().to_owned();
                match c.get("newValue") {
                    None | Some(Value::Null) => {
                        next.fields.remove(&f);
                    }
                    Some(v) => {
                        next.fields.insert(f, v.clone());
                    }
                }
            }
        }
    }
    next
}

/// The version rule: states and events of a record apply only when newer
/// than what is held; events of a record whose state is not loaded yet
/// wait for it (an event is a change on top of the previous version).
#[derive(Default)]
struct Table {
    held: HashMap<String, Held>,
    loading: bool,
    waiting: Vec<Value>,
}

impl Table {
    fn on_event(&mut self, e: &Value) {
        if e["entityType"] != "record" {
            return;
        }
        if self.loading {
            self.waiting.push(e.clone());
            return;
        }
        let id = e["entityId"].as_str().unwrap().to_owned();
        let v = e["version"].as_u64().unwrap();
        if self.held.get(&id).is_none_or(|h| v > h.version) {
            let next = apply(self.held.get(&id), e);
            self.held.insert(id, next);
        }
    }

    fn on_state(&mut self, s: &Value) {
        let id = s["recordId"].as_str().unwrap().to_owned();
        let state = held_of(s);
        if self.held.get(&id).is_none_or(|h| state.version > h.version) {
            self.held.insert(id, state);
        }
    }

    fn loaded(&mut self) {
        self.loading = false;
        for e in std::mem::take(&mut self.waiting) {
            self.on_event(&e);
        }
    }
}

fn events_of(event: &str, data: &Value) -> Vec<Value> {
    match event {
        "record_change" => vec![data.clone()],
        "batch_changes" | "recent_changes" | "missed_events" => {
            data.as_array().cloned().unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Random edits of `records` records: creates, updates (blind and with a
/// version), deletes, undos and redos; some are rejected or skipped, which
/// is fine. The ids of the events of each acknowledged undo or redo go to
/// `undone`.
async fn random_writer(
    mut w: Client,
    seed: u64,
    stop: Arc<AtomicBool>,
    undone: Arc<Mutex<Vec<String>>>,
) -> usize {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let r = format!("r{:02}", next() % 40);
        let field = format!("f{}", next() % 4);
        let value = match next() % 4 {
            0 => json!(null),
            1 => json!({"n": next() % 100, "deep": [1, {}]}),
            2 => json!(format!("v{}", next() % 1000)),
            _ => json!(next() % 1_000_000),
        };
        if next() % 8 == 0 {
            let way = if next() % 3 == 0 { "redo" } else { "undo" };
            let ack = w.request_ok(way, json!({"tableId": "conv"})).await;
            let ids = ack["events"].as_array().cloned().unwrap_or_default();
            let ids = ids
                .iter()
                .map(|e| e["eventId"].as_str().unwrap().to_owned());
            undone.lock().unwrap().extend(ids);
            n += 1;
            continue;
        }
        let mut c = change("conv", &r, &field, value);
        match next() % 10 {
            0 => c["type"] = json!("delete"),
            1 | 2 => c["type"] = json!("create"),
            3 | 4 => c["version"] = json!(next() % 6),
            _ => {}
        }
        w.request_ok("record_change", c).await;
        n += 1;
    }
    n
}

#[allow(clippy::too_many_lines)] // one scenario, end to end (predates the 80-line rule)
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_subscribes_then_pages_while_four_writers_write_ends_equal_to_the_state() {
    let cluster = Cluster::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let undone = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for i in 0..4u64 {
        let side = if i % 2 == 0 { &cluster.a } else { &cluster.b };
        let w = Client::connect(side, &format!("writer{i}")).await;
        writers.push(tokio::spawn(random_writer(
            w,
            i + 1,
            stop.clone(),
            undone.clone(),
        )));
    }
    // Let a state build up, then a late joiner on the other sidecar.
    support::wait_for("some history", LONG, || async {
        (support::stream_ids(&mut cluster.redis.conn().await, "conv")
            .await
            .len()
            > 150)
            .then_some(())
    })
    .await;
    let mut c = Client::connect(&cluster.b, "reader").await;
    let mut table = Table {
        loading: true,
        ..Table::default()
    };
    let rid = c
        .send_request("subscribe_to_table", json!({"tableId": "conv"}))
        .await;
    // Page with small pages while the writers go on, reading every frame in
    // arrival order (events interleave with the page answers).
    let mut after: Option<String> = None;
    let mut acked = false;
    loop {
        let mut req = json!({"tableId": "conv", "limit": 7});
        if let Some(a) = &after {
            req["after"] = json!(a);
        }
        let page_rid = c.send_request("load_records", req).await;
        let page = loop {
            let (event, data, r) = c.next(LONG).await.expect("frames");
            if event == "ack" && r == Some(rid) {
                acked = true;
            } else if event == "ack" && r == Some(page_rid) {
                break data;
            } else if event != "recent_changes" {
                // recent_changes are older than the start: the pages hold them.
                for e in events_of(&event, &data) {
                    table.on_event(&e);
                }
            }
        };
        for s in page["records"].as_array().unwrap() {
            table.on_state(s);
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
        // Pace the pages so that writes land between them.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(acked);
    table.loaded();
    // Writes go on after the load, then stop.
    let len = support::stream_ids(&mut cluster.redis.conn().await, "conv")
        .await
        .len();
    support::wait_for("more writes after the load", LONG, || async {
        let now = support::stream_ids(&mut cluster.redis.conn().await, "conv")
            .await
            .len();
        (now >= len + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for w in writers {
        writes += w.await.unwrap();
    }
    // Drain what is still on its way: every event up to the stream's end.
    let last = support::stream_ids(&mut cluster.redis.conn().await, "conv")
        .await
        .last()
        .cloned()
        .unwrap();
    let mut seen_last = false;
    while !seen_last {
        let (event, data, _) = c.next(LONG).await.expect("the rest of the events");
        for e in events_of(&event, &data) {
            seen_last |= e["id"] == json!(last);
            table.on_event(&e);
        }
    }
    let mut checker = Client::connect(&cluster.a, "checker").await;
    let truth: BTreeMap<String, Held> = all_records(&mut checker, "conv", 500)
        .await
        .iter()
        .map(|s| (s["recordId"].as_str().unwrap().to_owned(), held_of(s)))
        .collect();
    let mine: BTreeMap<String, Held> = table.held.into_iter().collect();
    assert!(writes > 200, "writes: {writes}");
    assert_eq!(mine.len(), truth.len());
    for (id, state) in &truth {
        assert_eq!(mine.get(id), Some(state), "record {id}");
    }
    let mut acked = undone.lock().unwrap().clone();
    acked.sort();
    assert!(!acked.is_empty(), "some undo wrote something");
    assert_eq!(undo_entries(&cluster.redis, "conv").await, acked);
}

/// The ids of a table's stream entries made by an undo or redo (their
/// metadata names the step), in order.
async fn undo_entries(redis: &RedisServer, table: &str) -> Vec<String> {
    let reply: redis::Value = redis::cmd("XRANGE")
        .arg(format!("rts:{{{table}}}:events"))
        .arg("-")
        .arg("+")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let mut ids: Vec<String> = rtsync::store::tailer::entries(reply)
        .into_iter()
        .filter(|(_, fields)| {
            fields.iter().any(|(k, v)| {
                k == "metadata"
                    && serde_json::from_slice::<Value>(v)
                        .is_ok_and(|m| m.get("undoOf").is_some() || m.get("redoOf").is_some())
            })
        })
        .map(|(id, _)| id.to_string())
        .collect();
    ids.sort();
    ids
}
