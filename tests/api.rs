//! The HTTP API and `/metrics` (docs/protocol.md section 6).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use serde_json::{json, Value};
use support::client::{change, Client};
use support::{RedisServer, Sidecar};

const AUTH: (&str, &str) = ("Authorization", "Bearer test-api-token-0123");

fn post(side: &Sidecar, path: &str, body: &str, auth: bool) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = if auth { vec![AUTH] } else { vec![] };
    let (status, text) = side.http("POST", path, &headers, body);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_api_route_needs_the_token() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    for (method, path) in [
        ("GET", "/api/v1/sync/stats"),
        ("POST", "/api/v1/sync/cleanup"),
        ("POST", "/api/v1/sync/batch-changes"),
    ] {
        let (status, body) = side.http(method, path, &[("Authorization", "Bearer wrong")], "{}");
        assert_eq!(status, 401, "{path}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["success"], false);
        assert_eq!(v["error"]["code"], "unauthenticated");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_without_a_configured_token_is_forbidden() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_API_TOKEN", "")]).await;
    let (status, _) = side.get("/api/v1/sync/stats");
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_count_connections_users_and_subscriptions() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let _a = Client::subscribed(&side, "u1", "t1").await;
    let _b = Client::subscribed(&side, "u2", "t1").await;
    let _c = Client::open(&side, None, &[], "").await;
    let v = support::wait_for("stats", std::time::Duration::from_secs(5), || async {
        let (_, body) = side.http("GET", "/api/v1/sync/stats", &[AUTH], "");
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["data"]["totalConnections"] == 3).then_some(v)
    })
    .await;
    let d = &v["data"];
    assert_eq!(d["authenticatedUsers"], 2);
    assert_eq!(d["tableSubscriptions"], 2);
    assert_eq!(d["tablesTailed"], 1);
    assert_eq!(d["redis"], "up");
    assert!(d["uptimeSeconds"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_with_a_bad_change_is_refused_whole_naming_the_index() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let body = json!({"changes": [
        {"type": "update", "entityId": "r1", "tableId": "t", "userId": "svc", "changes": [{"fieldId": "f", "newValue": 1}]},
        {"type": "update", "entityId": "r2", "tableId": "bad}id", "userId": "svc"},
    ]});
    let (status, v) = post(&side, "/api/v1/sync/batch-changes", &body.to_string(), true);
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "bad_request");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("changes[1]"));
    let mut conn = redis.conn().await;
    let exists: bool = redis::cmd("EXISTS")
        .arg("rts:{t}:events")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "nothing of the batch was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_batches_are_refused() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(
        &redis,
        "a",
        &[("RTS_MAX_BODY_BYTES", "1000"), ("RTS_MAX_BATCH", "2")],
    )
    .await;
    let (status, v) = post(&side, "/api/v1/sync/batch-changes", "{not json", true);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _) = post(&side, "/api/v1/sync/batch-changes", r#"{"nope": 1}"#, true);
    assert_eq!(status, 400);
    let (status, v) = post(&side, "/api/v1/sync/batch-changes", &"x".repeat(5000), true);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let three = json!({"changes": [{}, {}, {}]});
    let (status, _) = post(
        &side,
        "/api/v1/sync/batch-changes",
        &three.to_string(),
        true,
    );
    assert_eq!(status, 413);
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_changes_reach_subscribers() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut sub = Client::subscribed(&side, "s", "t").await;
    let body = json!({"changes": [
        {"type": "create", "entityId": "r1", "tableId": "t", "userId": "svc", "changes": [{"fieldId": "f", "newValue": 1}]},
        {"type": "update", "entityId": "r1", "tableId": "t", "userId": "svc", "version": 1, "changes": [{"fieldId": "f", "newValue": 2}]},
    ]});
    let (status, v) = post(&side, "/api/v1/sync/batch-changes", &body.to_string(), true);
    assert_eq!(status, 200, "{v}");
    let results = v["data"]["results"].as_array().unwrap();
    assert_eq!(results[1]["version"], 2);
    let got = sub.changes(2, std::time::Duration::from_secs(10)).await;
    assert_eq!(got[1]["id"], results[1]["eventId"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_expose_the_named_series_after_traffic() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut sub = Client::subscribed(&side, "s", "t").await;
    let mut w = Client::connect(&side, "w").await;
    w.request_ok("record_change", change("t", "r", "f", json!(1)))
        .await;
    sub.changes(1, std::time::Duration::from_secs(10)).await;
    let _ = w.request("nonsense", json!({})).await;
    let mut bad = Client::open(&side, None, &[], "").await;
    let _ = bad
        .request("authenticate", json!({"token": "garbage"}))
        .await;
    let (status, text) = side.get("/metrics");
    assert_eq!(status, 200);
    for name in [
        "rtsync_connections",
        "rtsync_messages_in_total",
        "rtsync_messages_out_total",
        "rtsync_bytes_in_total",
        "rtsync_bytes_out_total",
        "rtsync_commit_duration_seconds_bucket",
        "rtsync_commits_total",
        "rtsync_fanout_latency_seconds_bucket",
        "rtsync_events_delivered_total",
        "rtsync_delivery_batch_size",
        "rtsync_tables_tailed",
        "rtsync_auth_failures_total",
        "rtsync_redis_up",
        "rtsync_consumer_group_lag_entries",
        "rtsync_presence_users",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(text.contains(r#"rtsync_commits_total{status="applied"}"#));
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_json_and_never_contain_tokens() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let token = support::tokens::token("secretive");
    let c = Client::connect(&side, "secretive").await;
    c.close().await;
    let mut bad = Client::open(&side, None, &[], "").await;
    let forged = format!("{token}x");
    let _ = bad.request("authenticate", json!({"token": forged})).await;
    support::wait_for("logs", std::time::Duration::from_secs(5), || async {
        (side.log_contains("connection closed") && side.log_contains("authentication failed"))
            .then_some(())
    })
    .await;
    let logs = side.logs.lock().unwrap().clone();
    for line in &logs {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
        assert!(!line.contains(&token[..40]), "token leaked: {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_body_that_never_arrives_times_out() {
    use std::io::{Read, Write};
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let addr = side.addr;
    let response = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        s.write_all(
            b"POST /api/v1/sync/batch-changes HTTP/1.1\r\nHost: x\r\n\
              Authorization: Bearer test-api-token-0123\r\nContent-Length: 100\r\n\r\n{\"cha",
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("bad_request"), "{response}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_metric_is_exported_from_the_start() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let (status, text) = side.get("/metrics");
    assert_eq!(status, 200);
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/rtsync.json"))
            .unwrap();
    let mut queried: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("rtsync_"))
        // The sink row's metrics come from `rtsync sink` (tests/sink.rs).
        .filter(|w| !rtsync::metrics::SINK_ALL.iter().any(|s| w.starts_with(s)))
        .collect();
    queried.sort();
    queried.dedup();
    for name in queried {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} is not exported before first use"
        );
    }
    // Counters of failures are there at zero, per label.
    assert!(
        text.contains(r#"rtsync_auth_failures_total{reason="invalid"} 0"#),
        "{text}"
    );
    assert!(text.contains("rtsync_delivery_batch_size_bucket{le=\"256\"} 0"));
}
