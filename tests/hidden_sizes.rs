//! Field-level grants and byte bounds (docs/protocol.md 2.1 and "Limits"):
//! the size of a field a user may not read never reaches that user, neither
//! in a refusal's message nor in where a bounded reply is cut. Each reply is
//! cut by the bytes its reader receives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use support::client::{Client, Enc};
use support::tokens::now_secs;
use support::{RedisServer, Sidecar};

/// May read and write every field but `salary`, which it cannot see.
fn no_salary() -> Value {
    json!({"access": "rw", "fields": {"salary": "none"}})
}

async fn connect(side: &Sidecar, user: &str, grant: Value) -> Client {
    let claims = json!({"sub": user, "exp": now_secs() + 3600, "tables": {"*": grant}});
    Client::connect_claims(side, &claims, Enc::Json).await
}

/// A JSON string value whose stored text (with its quotes) is `bytes` long.
fn text_of(bytes: usize) -> Value {
    json!("s".repeat(bytes - 2))
}

fn update(table: &str, record: &str, fields: &[(&str, Value)]) -> Value {
    let changes: Vec<Value> = fields
        .iter()
        .map(|(f, v)| json!({"fieldId": f, "newValue": v}))
        .collect();
    json!({"type": "update", "recordId": record, "tableId": table, "changes": changes})
}

/// Every run of digits in `text`, as numbers.
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Writes `n` records `rec-a`, `rec-b`, ... each with a visible `name`
/// and a hidden `salary` of `salary_bytes`.
async fn records_with_big_salaries(admin: &mut Client, table: &str, n: u8, salary_bytes: usize) {
    for i in 0..n {
        let record = format!("rec-{}", (b'a' + i) as char);
        admin
            .request_ok(
                "record_change",
                update(
                    table,
                    &record,
                    &[("name", json!("Ann")), ("salary", text_of(salary_bytes))],
                ),
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payload_too_large_refusal_names_the_limit_and_no_hidden_size() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "hs-413", &[("RTS_MAX_RECORD_BYTES", "1000000")]).await;
    let t = "hs-size";
    let mut admin = Client::connect(&side, "admin").await;
    admin
        .request_ok(
            "record_change",
            update(t, "big", &[("salary", text_of(654_321))]),
        )
        .await;
    let mut user = connect(&side, "user", no_salary()).await;
    let err = user
        .request(
            "record_change",
            update(t, "big", &[("name", text_of(400_000))]),
        )
        .await
        .unwrap_err();
    assert_eq!(err["code"], "payload_too_large", "{err}");
    let message = err["message"].as_str().unwrap();
    // The record holds 6 + 654,321 bytes and would hold 4 + 400,000 more.
    for hidden in ["654321", "654327", "1054331"] {
        assert!(!message.contains(hidden), "{message}");
    }
    assert!(message.contains("1000000"), "names the limit: {message}");
    assert_eq!(
        numbers(message),
        vec![1_000_000],
        "no other number: {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_masked_load_records_page_is_cut_by_the_bytes_its_reader_receives() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "hs-load", &[("RTS_MAX_PAGE_BYTES", "100000")]).await;
    let t = "hs-load";
    let mut admin = Client::connect(&side, "admin").await;
    records_with_big_salaries(&mut admin, t, 5, 60_000).await;

    let mut user = connect(&side, "user", no_salary()).await;
    let page = user.request_ok("load_records", json!({"tableId": t})).await;
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 5, "as if the salaries were empty: {page}");
    assert!(page.get("next").is_none(), "{page}");
    assert!(records
        .iter()
        .all(|r| r["fields"] == json!({"name": "Ann"})));

    let full = admin
        .request_ok("load_records", json!({"tableId": t}))
        .await;
    assert_eq!(
        full["records"].as_array().unwrap().len(),
        1,
        "the admin receives the salaries: its page is cut"
    );
    assert_eq!(full["next"], "rec-a");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_masked_load_records_by_ids_is_cut_by_the_bytes_its_reader_receives() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "hs-ids", &[("RTS_MAX_PAGE_BYTES", "100000")]).await;
    let t = "hs-ids";
    let mut admin = Client::connect(&side, "admin").await;
    records_with_big_salaries(&mut admin, t, 3, 60_000).await;
    let ids = json!({"tableId": t, "recordIds": ["rec-a", "rec-b", "rec-c"]});

    let mut user = connect(&side, "user", no_salary()).await;
    let page = user.request_ok("load_records", ids.clone()).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 3, "{page}");
    assert!(page.get("remaining").is_none(), "{page}");

    let full = admin.request_ok("load_records", ids).await;
    assert_eq!(full["remaining"], json!(["rec-b", "rec-c"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn masked_recent_changes_hold_as_many_events_as_if_hidden_fields_were_empty() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "hs-recent", &[("RTS_MAX_PAGE_BYTES", "100000")]).await;
    let t = "hs-recent";
    let mut admin = Client::connect(&side, "admin").await;
    records_with_big_salaries(&mut admin, t, 5, 60_000).await;

    let mut user = connect(&side, "user", no_salary()).await;
    user.request_ok("subscribe_to_table", json!({"tableId": t}))
        .await;
    let recent = user.expect_event("recent_changes").await;
    assert_eq!(recent.as_array().unwrap().len(), 5, "{recent}");

    let mut full = Client::connect_json(&side, "hr").await;
    full.request_ok("subscribe_to_table", json!({"tableId": t}))
        .await;
    let recent = full.expect_event("recent_changes").await;
    assert_eq!(
        recent.as_array().unwrap().len(),
        1,
        "the full events are cut"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_masked_commit_answer_is_truncated_only_by_fields_its_user_reads() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "hs-answer", &[("RTS_MAX_PAGE_BYTES", "100000")]).await;
    let t = "hs-answer";
    let mut admin = Client::connect(&side, "admin").await;
    records_with_big_salaries(&mut admin, t, 1, 200_000).await;

    let mut user = connect(&side, "user", no_salary()).await;
    let create = json!({"type": "create", "recordId": "rec-a", "tableId": t,
        "changes": [{"fieldId": "title", "newValue": "x"}]});
    let answer = user.request_ok("record_change", create.clone()).await;
    assert_eq!(answer["reason"], "exists", "{answer}");
    assert!(answer.get("truncated").is_none(), "{answer}");
    assert_eq!(answer["current"]["fields"], json!({"name": "Ann"}));

    let full = admin.request_ok("record_change", create).await;
    assert_eq!(full["truncated"], true, "the admin's answer is cut: {full}");
}

#[tokio::test(flavor = "multi_thread")]
async fn masked_missed_events_frames_are_cut_by_the_bytes_their_reader_receives() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "hs-missed", &[]).await;
    let t = "hs-missed";
    let mut admin = Client::connect(&side, "admin").await;
    let first = admin
        .request_ok(
            "record_change",
            update(t, "rec-0", &[("name", json!("first"))]),
        )
        .await;
    // 10 events of 100 KB each: a recovery reads them in pages of 256 KiB.
    records_with_big_salaries(&mut admin, t, 10, 100_000).await;

    let mut user = connect(&side, "user", no_salary()).await;
    user.request_ok(
        "recover_connection",
        json!({"tableId": t, "lastEventId": first["eventId"]}),
    )
    .await;
    let mut frames = Vec::new();
    loop {
        let (event, data, _) = user
            .take(|(e, _, _)| e == "missed_events" || e == "connection_recovered")
            .await
            .expect("the replay ends");
        if event == "connection_recovered" {
            break;
        }
        frames.push(data.as_array().unwrap().len());
    }
    assert_eq!(frames, vec![10], "one frame, as if the salaries were empty");
}
