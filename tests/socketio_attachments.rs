//! Binary attachments on `/socket.io/` (docs/protocol.md section 10) are
//! bounded before they are built: each placeholder names a distinct
//! attachment, nothing is kept before authentication, and a packet whose
//! attachments do not come is refused at a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::sio::Sio;
use support::{RedisServer, Sidecar};

const LONG: Duration = Duration::from_secs(20);

fn ph(n: u64) -> Value {
    json!({"_placeholder": true, "num": n})
}

fn change_with(value: Value) -> Value {
    json!({"type": "update", "recordId": "r1", "tableId": "t", "baseId": "b",
        "changes": [{"fieldId": "f", "newValue": value}]})
}

async fn authenticated(side: &Sidecar, user: &str) -> Sio {
    Sio::connect(side, &json!({"token": support::tokens::token(user)})).await
}

/// The error a request with ack id `id` was answered with.
async fn error_of(sio: &mut Sio, id: u64) -> Value {
    let prefix = format!("43{id}");
    let ack = sio.packet(&prefix, LONG).await.expect("an answer");
    let args: Value = serde_json::from_str(&ack[prefix.len()..]).unwrap();
    args[0]["error"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_attachment_named_1200_times_is_refused_and_the_sidecar_stays_small() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut sio = authenticated(&side, "u").await;
    let before = support::rss_bytes(side.pid());
    let many = Value::Array((0..1200).map(|_| ph(0)).collect());
    let body = json!(["record_change", change_with(many)]);
    sio.send_text(&format!("451-4{body}")).await;
    sio.send_binary(vec![7; 100 * 1024]).await;
    let error = error_of(&mut sio, 4).await;
    assert_eq!(error["code"], "bad_request", "{error}");
    let grown = support::rss_bytes(side.pid()).saturating_sub(before);
    assert!(grown < 64 << 20, "the sidecar grew by {grown} bytes");
    // Alive, and the same connection still works.
    assert_eq!(side.get("/healthz").0, 200);
    let ack = sio
        .request(5, "record_change", &change_with(json!(1)))
        .await;
    assert_eq!(ack.unwrap()["status"], "applied");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_placeholder_is_refused() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut sio = authenticated(&side, "u").await;
    let body = json!(["record_change", change_with(json!([ph(0), ph(0)]))]);
    sio.send_text(&format!("451-6{body}")).await;
    sio.send_binary(vec![1, 2, 3]).await;
    let error = error_of(&mut sio, 6).await;
    assert_eq!(error["code"], "bad_request", "{error}");
    assert!(error["message"].as_str().unwrap().contains("placeholder"));
}

#[tokio::test(flavor = "multi_thread")]
async fn before_authentication_a_binary_event_is_refused_and_its_attachments_dropped() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut sio = Sio::open(&side).await;
    sio.send_text("40").await;
    assert!(sio.packet("40", LONG).await.is_some(), "connected");
    let before = support::rss_bytes(side.pid());
    let many = Value::Array((0..400).map(|_| ph(0)).collect());
    let body = json!(["record_change", change_with(many)]);
    sio.send_text(&format!("451-2{body}")).await;
    sio.send_binary(vec![7; 15 * 1024]).await;
    let error = error_of(&mut sio, 2).await;
    assert_eq!(error["code"], "unauthenticated", "{error}");
    let grown = support::rss_bytes(side.pid()).saturating_sub(before);
    assert!(grown < 16 << 20, "the sidecar grew by {grown} bytes");
    // The connection may still authenticate.
    let token = support::tokens::token("u");
    let ack = sio
        .request(3, "authenticate", &json!({"token": token}))
        .await;
    assert_eq!(ack.unwrap()["userId"], "u");
}

#[tokio::test(flavor = "multi_thread")]
async fn attachments_that_never_come_are_refused_at_the_deadline() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(
        &redis,
        "a",
        &[
            ("RTS_SOCKETIO_PING_INTERVAL_MS", "500"),
            ("RTS_SOCKETIO_PING_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    let mut sio = authenticated(&side, "u").await;
    let body = json!(["record_change", change_with(json!([ph(0), ph(1)]))]);
    sio.send_text(&format!("452-7{body}")).await;
    sio.send_binary(vec![9; 64 * 1024]).await;
    let started = std::time::Instant::now();
    let error = error_of(&mut sio, 7).await;
    assert_eq!(error["code"], "bad_request", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("in time"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Freed: the next text packet is a request of its own.
    let ack = sio
        .request(8, "record_change", &change_with(json!(2)))
        .await;
    assert_eq!(ack.unwrap()["status"], "applied");
}
