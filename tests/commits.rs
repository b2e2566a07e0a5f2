//! What a commit promises beyond the version check: values read back
//! exactly as written (stream, state, `current`), no error after a write,
//! idempotency keys scoped to user and table and kept for every answer,
//! strict versions, events every subscriber can be sent, and the truth
//! about a Redis that did not answer (`timeout`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};
use support::client::{change, Client};
use support::{RedisServer, Sidecar};

const LONG: Duration = Duration::from_secs(20);

async fn stored(redis: &RedisServer, table: &str, record: &str, field: &str) -> Option<Value> {
    let raw: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(format!("rts:{{{table}}}:rec:{record}"))
        .arg(format!("d:{field}"))
        .query_async(&mut redis.conn().await)
        .await
        .expect("HGET");
    raw.map(|r| serde_json::from_slice(&r).expect("state values are JSON text"))
}

async fn xlen(redis: &RedisServer, table: &str) -> usize {
    redis::cmd("XLEN")
        .arg(format!("rts:{{{table}}}:events"))
        .query_async(&mut redis.conn().await)
        .await
        .expect("XLEN")
}

/// Commits `value` into r.f with a MessagePack writer; checks that a
/// MessagePack and a JSON subscriber receive it unchanged, that the record
/// state holds it, and that a rejection's `current` returns it.
async fn round_trip(
    redis: &RedisServer,
    writer: &mut Client,
    subs: &mut [Client],
    record: &str,
    value: &Value,
) {
    let ack = writer
        .request_ok("record_change", change("t", record, "f", value.clone()))
        .await;
    assert_eq!(ack["status"], "applied", "{ack}");
    for sub in subs.iter_mut() {
        let got = sub.changes(1, LONG).await;
        assert_eq!(got.len(), 1, "{:?} subscriber got the event", sub.enc);
        assert_eq!(
            &got[0]["changes"][0]["newValue"], value,
            "{:?} subscriber",
            sub.enc
        );
    }
    assert_eq!(
        stored(redis, "t", record, "f").await.as_ref(),
        Some(value),
        "state"
    );
    let mut create = change("t", record, "f", json!(0));
    create["type"] = json!("create");
    let rejected = writer.request_ok("record_change", create).await;
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(&rejected["current"]["fields"]["f"], value, "current");
}

async fn writer_and_subscribers(side: &Sidecar) -> (Client, Vec<Client>) {
    let writer = Client::connect(side, "w").await;
    let mut msgpack = Client::connect(side, "m").await;
    msgpack
        .request_ok("subscribe_to_table", json!({"tableId": "t"}))
        .await;
    let mut js = Client::connect_json(side, "j").await;
    js.request_ok("subscribe_to_table", json!({"tableId": "t"}))
        .await;
    (writer, vec![msgpack, js])
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("bottom"), |v, i| {
        if i % 2 == 0 {
            json!([v])
        } else {
            json!({ "k": v })
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn field_values_read_back_exactly_as_written() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let (mut writer, mut subs) = writer_and_subscribers(&side).await;
    let cases = [
        json!({}),
        json!([]),
        json!({"a": {}}),
        nested(40),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(9_007_199_254_740_993u64),
        json!(0.1),
        json!(-1.5e-300),
        json!(1.0),
        json!("héllo wörld ✓ 𝄞 日本"),
        json!([1, null, null, null, 2]),
        json!(false),
    ];
    for (i, value) in cases.iter().enumerate() {
        round_trip(&redis, &mut writer, &mut subs, &format!("r{i}"), value).await;
    }
}

/// Random JSON values: every kind, empty containers, nesting, big integers.
fn any_value() -> impl Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn random_values_survive_commit_stream_and_state() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let (mut writer, mut subs) = writer_and_subscribers(&side).await;
    let mut runner = TestRunner::deterministic();
    let strategy = any_value().prop_filter("a value to store", |v| !v.is_null());
    for i in 0..40 {
        let value = strategy.new_tree(&mut runner).expect("a value").current();
        round_trip(&redis, &mut writer, &mut subs, &format!("p{i}"), &value).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_array_with_nulls_in_a_field_never_breaks_later_commits() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&side, "u").await;
    let first = c
        .request_ok(
            "record_change",
            change("t", "r", "f", json!([1, null, null, 2])),
        )
        .await;
    assert_eq!(first["status"], "applied");
    // A stale write that conflicts on f reads the stored value back.
    let mut stale = change("t", "r", "f", json!(3));
    stale["version"] = json!(0);
    let ack = c.request_ok("record_change", stale).await;
    assert_eq!(ack["status"], "overwritten", "{ack}");
    assert_eq!(ack["conflicts"][0]["theirValue"], json!([1, null, null, 2]));
    let mut more = change("t", "r", "g", json!([null]));
    more["clientChangeId"] = json!("later");
    let ack = c.request_ok("record_change", more.clone()).await;
    assert_eq!(ack["status"], "applied", "{ack}");
    let again = c.request_ok("record_change", more).await;
    assert_eq!(again["status"], "duplicate");
    assert_eq!(xlen(&redis, "t").await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn version_nan_infinity_negative_or_fractional_is_bad_request() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut json_client = Client::connect_json(&side, "j").await;
    for version in [json!(-1), json!(1.5), json!(9_007_199_254_740_993u64)] {
        let mut data = change("t", "r", "f", json!(1));
        data["version"] = version.clone();
        let err = json_client
            .request("record_change", data)
            .await
            .expect_err("refused");
        assert_eq!(err["code"], "bad_request", "{version}: {err}");
    }
    // NaN and ±Infinity exist only in MessagePack: hand-encoded frames.
    let mut c = Client::connect(&side, "m").await;
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut frame = rmp_serde::to_vec_named(&json!(["record_change"])).unwrap();
        frame[0] = 0x93; // [event, data, rid]
        let mut data = change("t", "r", "f", json!(1));
        data["version"] = json!("VERSION");
        let mut body = rmp_serde::to_vec_named(&data).unwrap();
        let marker = rmp_serde::to_vec_named(&json!("VERSION")).unwrap();
        let at = body
            .windows(marker.len())
            .position(|w| w == marker)
            .unwrap();
        let mut float = vec![0xcb];
        float.extend_from_slice(&x.to_be_bytes());
        body.splice(at..at + marker.len(), float);
        frame.extend_from_slice(&body);
        frame.push(99);
        c.send_raw(tokio_tungstenite::tungstenite::Message::Binary(
            frame.into(),
        ))
        .await;
        let (_, err, _) = c
            .take(|(e, _, rid)| e == "error" && *rid == Some(99))
            .await
            .expect("an error for the NaN version");
        assert_eq!(err["code"], "bad_request", "{x}: {err}");
    }
    assert_eq!(xlen(&redis, "t").await, 0, "nothing written");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_change_id_is_scoped_to_its_user_and_table() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut alice = Client::connect(&side, "alice").await;
    let mut bob = Client::connect(&side, "bob").await;
    let with_id = |table: &str, value: i64| {
        let mut c = change(table, "r", "f", json!(value));
        c["clientChangeId"] = json!("same-id");
        c
    };
    let a1 = alice.request_ok("record_change", with_id("t", 1)).await;
    let b1 = bob.request_ok("record_change", with_id("t", 2)).await;
    let a2 = alice.request_ok("record_change", with_id("u", 3)).await;
    for ack in [&a1, &b1, &a2] {
        assert_eq!(ack["status"], "applied", "{ack}");
    }
    let again = alice.request_ok("record_change", with_id("t", 4)).await;
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["eventId"], a1["eventId"]);
    assert_eq!(xlen(&redis, "t").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_change_id_is_remembered_and_a_resend_returns_the_first_answer() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&side, "u").await;
    c.request_ok("record_change", change("t", "r", "f", json!(1)))
        .await;
    let mut create = change("t", "r", "f", json!(2));
    create["type"] = json!("create");
    create["clientChangeId"] = json!("c1");
    let first = c.request_ok("record_change", create.clone()).await;
    assert_eq!(first["status"], "rejected");
    assert_eq!(first["reason"], "exists");
    // The record is deleted meanwhile: a fresh evaluation would apply the
    // create. The resend must answer what the first did.
    let mut delete = change("t", "r", "f", json!(null));
    delete["type"] = json!("delete");
    c.request_ok("record_change", delete).await;
    let again = c.request_ok("record_change", create).await;
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["originalStatus"], "rejected");
    assert_eq!(again["reason"], "exists");
    // The dedup key keeps no record state: the duplicate carries the
    // record as it is now, for the client's rollback.
    assert_eq!(again["current"]["version"], 2);
    assert_eq!(again["current"]["deleted"], true);
    assert_eq!(xlen(&redis, "t").await, 2, "the resend wrote nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_too_large_for_json_is_refused_and_json_subscribers_stay_live() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut js = Client::connect_json(&side, "j").await;
    js.request_ok("subscribe_to_table", json!({"tableId": "t"}))
        .await;
    let mut writer = Client::connect(&side, "w").await;
    // 900 KB of control characters: about 5.4 MB as JSON (\u0001 each).
    let huge = "\u{1}".repeat(900 * 1024);
    let err = writer
        .request("record_change", change("t", "r", "f", json!(huge)))
        .await
        .expect_err("refused");
    assert_eq!(err["code"], "payload_too_large", "{err}");
    assert_eq!(xlen(&redis, "t").await, 0, "nothing written");
    // A large event that fits in both encodings is delivered.
    let big = "x".repeat(600 * 1024);
    writer
        .request_ok("record_change", change("t", "r", "f", json!(big)))
        .await;
    let got = js.changes(1, LONG).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0]["changes"][0]["newValue"].as_str().map(str::len),
        Some(600 * 1024)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_redis_does_not_answer_in_time_is_timeout_and_a_resend_is_a_duplicate() {
    if support::cluster_mode() {
        return; // pauses one Redis server: single-server only
    }
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&side, "u").await;
    // Every pooled Redis connection is open (they connect lazily): the
    // stalled command is sent, not stuck in a connection handshake.
    for n in 0..40 {
        c.request_ok("record_change", change("warm", "r", "f", json!(n)))
            .await;
    }
    let mut data = change("t", "r", "f", json!(1));
    data["clientChangeId"] = json!("stalled");
    redis.pause();
    let err = c.request("record_change", data.clone()).await;
    redis.resume();
    let err = err.expect_err("no answer while Redis is stopped");
    assert_eq!(err["code"], "timeout", "{err}");
    // The command was sent: Redis runs it once it goes on.
    support::wait_for("the stalled commit applied", LONG, || async {
        (xlen(&redis, "t").await == 1).then_some(())
    })
    .await;
    let again = c.request_ok("record_change", data).await;
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["originalStatus"], "applied");
    assert_eq!(xlen(&redis, "t").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_after_redis_lost_the_function_library_loads_it_again_and_applies() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut w = Client::connect(&side, "w").await;
    w.request_ok("record_change", change("t", "r", "f", json!(1)))
        .await;
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut redis.conn().await)
        .await
        .expect("FUNCTION FLUSH");
    let ack = w
        .request_ok("record_change", change("t", "r", "f", json!(2)))
        .await;
    assert_eq!(ack["status"], "applied");
    assert_eq!(stored(&redis, "t", "r", "f").await, Some(json!(2)));
    assert_eq!(xlen(&redis, "t").await, 2);
}
