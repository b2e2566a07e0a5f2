//! Health, readiness, input errors and graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::client::Client;
use support::{RedisServer, Sidecar};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
async fn healthz_and_readyz_answer_while_redis_is_up() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    assert_eq!(side.get("/healthz").0, 200);
    assert_eq!(side.get("/readyz").0, 200);
    assert_eq!(side.get("/nope").0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_while_redis_is_down_and_recovers() {
    if support::cluster_mode() {
        return; // kills and restarts one Redis server: single-server only
    }
    let mut redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    redis.kill();
    support::wait_for("readyz 503", Duration::from_secs(10), || async {
        (side.get("/readyz").0 == 503).then_some(())
    })
    .await;
    assert_eq!(side.get("/healthz").0, 200, "the process stays up");
    redis.restart().await;
    support::wait_for("readyz 200", Duration::from_secs(10), || async {
        (side.get("/readyz").0 == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn record_change_while_redis_is_down_answers_unavailable() {
    if support::cluster_mode() {
        return; // kills and restarts one Redis server: single-server only
    }
    let mut redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&side, "u").await;
    redis.kill();
    // A request on a connection that broke under it may have reached Redis
    // (`timeout`: outcome unknown); once the sidecar knows Redis is gone,
    // nothing is sent (`unavailable`).
    let mut codes = Vec::new();
    for _ in 0..20 {
        let err = c
            .request(
                "record_change",
                support::client::change("t", "r", "f", json!(1)),
            )
            .await
            .unwrap_err();
        let code = err["code"].as_str().unwrap_or_default().to_owned();
        assert!(code == "unavailable" || code == "timeout", "{err}");
        codes.push(code);
        if codes.last().is_some_and(|c| c == "unavailable") {
            break;
        }
    }
    assert_eq!(
        codes.last().map(String::as_str),
        Some("unavailable"),
        "{codes:?}"
    );
    // The connection stays open.
    c.request("authenticate", json!({})).await.unwrap_err();
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_get_bad_request_and_the_connection_stays_open() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&side, "u").await;
    for garbage in [
        Message::Binary(vec![0xc1, 0xff, 0x00].into()),
        Message::Text("not json".into()),
        Message::Text("{\"event\": 1}".into()),
        Message::Binary(vec![0xdd, 0xff, 0xff, 0xff, 0xff].into()), // array of 4G items, truncated
    ] {
        c.send_raw(garbage).await;
        let (_, err, _) = c.take(|(e, _, _)| e == "error").await.expect("error frame");
        assert_eq!(err["code"], "bad_request");
    }
    let err = c.request("fly_to_the_moon", json!({})).await.unwrap_err();
    assert_eq!(err["code"], "unknown_event");
    let err = c
        .request("subscribe_to_table", json!({"tableId": "bad{id}"}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "bad_request");
    let err = c
        .request(
            "record_change",
            json!({"type": "explode", "recordId": "r", "tableId": "t"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err["code"], "bad_request");
    let err = c
        .request("heartbeat", json!({"tableId": "t"}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "not_subscribed");
    c.request_ok("subscribe_to_table", json!({"tableId": "t", "viewId": "v"}))
        .await;
    let ack = c.request_ok("heartbeat", json!({"tableId": "t"})).await;
    assert!(ack["timestamp"].as_u64().is_some());
    c.expect_event("heartbeat_ack").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn frame_over_the_limit_closes_with_4413() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_FRAME_BYTES", "1024")]).await;
    let mut c = Client::connect(&side, "u").await;
    c.send_raw(Message::Binary(vec![0u8; 4096].into())).await;
    assert_eq!(c.closed().await, Some(4413));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_websockets_with_4500_and_exits_in_time() {
    let redis = RedisServer::start().await;
    let mut side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::subscribed(&side, "u", "t").await;
    let started = std::time::Instant::now();
    side.signal("TERM");
    assert_eq!(c.closed().await, Some(4500));
    let status = side
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exited within 10 s");
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_exits_with_a_clear_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rtsync"))
        .env_clear()
        .env("RTS_AUTH", "jwt")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("RTS_JWT_SECRET"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_needs_the_api_token() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    assert_eq!(side.get("/api/v1/sync/stats").0, 401);
    let (status, body) = side.http(
        "GET",
        "/api/v1/sync/stats",
        &[("Authorization", "Bearer test-api-token-0123")],
        "",
    );
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["data"]["totalConnections"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_field_changes_are_payload_too_large_and_write_nothing() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_CHANGES", "2")]).await;
    let mut c = Client::connect(&side, "u").await;
    let changes: Vec<_> = (0..3)
        .map(|i| json!({"fieldId": format!("f{i}"), "newValue": i}))
        .collect();
    let err = c
        .request(
            "record_change",
            json!({"type": "update", "recordId": "r", "tableId": "t", "changes": changes}),
        )
        .await
        .unwrap_err();
    assert_eq!(err["code"], "payload_too_large");
    assert!(support::stream_ids(&mut redis.conn().await, "t")
        .await
        .is_empty());
    // Within the limit it commits; the connection stayed open.
    c.request_ok(
        "record_change",
        support::client::change("t", "r", "f", json!(1)),
    )
    .await;
}

/// Runs the binary with `env` only; returns (exit code, stderr).
fn start_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rtsync"));
    cmd.env_clear().env("RTS_LISTEN", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_short_or_missing_secrets_are_refused_before_binding() {
    let long = "s".repeat(32);
    for (env, needle) in [
        (
            vec![("RTS_JWT_SECRET", "")],
            "RTS_JWT_SECRET is set but empty",
        ),
        (
            vec![("RTS_JWT_SECRET", "   ")],
            "RTS_JWT_SECRET is set but empty",
        ),
        (vec![("RTS_JWT_SECRET", "too-short")], "at least 32 bytes"),
        (
            vec![("RTS_JWT_SECRET", long.as_str()), ("RTS_API_TOKEN", "")],
            "RTS_API_TOKEN is set but empty",
        ),
        (
            vec![("RTS_JWT_SECRET", long.as_str()), ("RTS_API_TOKEN", " \t")],
            "RTS_API_TOKEN is set but empty",
        ),
        (
            vec![("RTS_AUTH", "jwt")],
            "RTS_JWT_SECRET or RTS_JWT_PUBLIC_KEY",
        ),
        (
            vec![("RTS_JWT_SECRET", long.as_str()), ("RTS_API_TOKEN", "x")],
            "RTS_API_TOKEN must be at least 16 bytes (it is 1)",
        ),
        (
            vec![
                ("RTS_JWT_SECRET", long.as_str()),
                ("RTS_API_TOKEN", "fifteen-bytes.."),
            ],
            "RTS_API_TOKEN must be at least 16 bytes (it is 15)",
        ),
    ] {
        let (code, stderr) = start_with(&env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains(needle), "{env:?}: {stderr}");
        assert!(!stderr.contains("\"listening\""), "never bound: {stderr}");
    }
}
