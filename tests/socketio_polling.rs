//! Engine.IO long-polling on `/socket.io/` (docs/protocol.md section 10), by
//! raw HTTP requests: the handshake, Engine.IO's errors, one GET and one
//! POST at a time, the payload bound, the connection limit, abandoned
//! sessions freed, CORS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{RedisServer, Sidecar};

const MB: u64 = 1024 * 1024;

fn polling(sid: Option<&str>) -> String {
    match sid {
        Some(sid) => format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
        None => "/socket.io/?EIO=4&transport=polling".to_owned(),
    }
}

/// The handshake's `open` packet, parsed.
fn handshake(side: &Sidecar) -> Value {
    let (status, body) = side.get(&polling(None));
    assert_eq!(status, 200, "{body}");
    let open = body.strip_prefix('0').unwrap_or_else(|| panic!("{body}"));
    serde_json::from_str(open).unwrap()
}

fn error_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handshake_announces_its_sid_heartbeat_upgrade_and_max_payload() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_FRAME_BYTES", "100000")]).await;
    let open = handshake(&side);
    assert_eq!(open["sid"].as_str().map(str::len), Some(32));
    assert_eq!(open["upgrades"], json!(["websocket"]));
    assert_eq!(open["pingInterval"], 25000);
    assert_eq!(open["pingTimeout"], 20000);
    assert_eq!(open["maxPayload"], 100000);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_sid_is_refused_at_once_as_session_id_unknown() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let started = Instant::now();
    let (status, body) = side.get(&polling(Some("0123456789abcdef0123456789abcdef")));
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&body),
        json!({"code": 1, "message": "Session ID unknown"})
    );
    let (status, body) = side.http("POST", &polling(Some("nope")), &[], "40");
    assert_eq!((status, error_of(&body)["code"].clone()), (400, json!(1)));
    assert!(started.elapsed() < Duration::from_secs(2), "never a hang");
}

#[tokio::test(flavor = "multi_thread")]
async fn other_protocol_versions_transports_and_methods_are_refused() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let (s, b) = side.get("/socket.io/?EIO=3&transport=polling");
    assert_eq!((s, error_of(&b)["code"].clone()), (400, json!(5)));
    let (s, b) = side.get("/socket.io/?EIO=4&transport=carrier-pigeon");
    assert_eq!((s, error_of(&b)["code"].clone()), (400, json!(0)));
    let (s, b) = side.http("POST", &polling(None), &[], "40");
    assert_eq!((s, error_of(&b)["code"].clone()), (400, json!(2)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_and_a_get_carry_a_connect_and_its_answer() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let sid = handshake(&side)["sid"].as_str().unwrap().to_owned();
    let (status, body) = side.http("POST", &polling(Some(&sid)), &[], "40");
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, body) = side.get(&polling(Some(&sid)));
    assert_eq!(status, 200);
    assert!(body.starts_with("40{\"sid\":"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gets_at_once_close_the_session() {
    let redis = RedisServer::start().await;
    let side = Arc::new(Sidecar::start(&redis, "a", &[]).await);
    let sid = handshake(&side)["sid"].as_str().unwrap().to_owned();
    // Two GETs at once (nothing is queued, so the first one parks): the
    // second, whichever it is, breaks the rule.
    let get = || {
        let (side, sid) = (side.clone(), sid.clone());
        tokio::task::spawn_blocking(move || side.get(&polling(Some(&sid))))
    };
    let started = Instant::now();
    let (one, two) = (get(), get());
    let mut answers = vec![one.await.unwrap(), two.await.unwrap()];
    // Closed at once, not when some timeout (authentication, ping) ends
    // the session.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    answers.sort();
    // The session is gone: the parked GET is answered with Engine.IO's
    // close, the other refused; the sid is unknown from now on.
    assert_eq!(answers[0], (200, "1".to_owned()), "{answers:?}");
    assert_eq!(
        (answers[1].0, error_of(&answers[1].1)["code"].clone()),
        (400, json!(3))
    );
    let (_, metrics) = side.get("/metrics");
    let refused = support::metric(
        &metrics,
        "rtsync_frames_rejected_total{reason=\"protocol\"}",
    );
    assert_eq!(refused, 1.0, "counted: {metrics}");
    let (status, body) = side.get(&polling(Some(&sid)));
    assert_eq!((status, error_of(&body)["code"].clone()), (400, json!(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payload_over_max_payload_is_refused_and_closes_the_session() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let sid = handshake(&side)["sid"].as_str().unwrap().to_owned();
    let big = format!("4{}", "x".repeat(2 * MB as usize));
    let (status, _) = side.http("POST", &polling(Some(&sid)), &[], &big);
    assert!(
        status == 400 || status == 0,
        "refused (or the connection cut while the body was still coming): {status}"
    );
    support::wait_for("the session to close", Duration::from_secs(5), || async {
        let (status, body) = side.get(&polling(Some(&sid)));
        (status == 400 && error_of(&body)["code"] == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_sessions_count_against_the_connection_limit() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_CONNECTIONS", "2")]).await;
    // Two authenticated sessions (waiting ones have a smaller cap).
    for user in ["u1", "u2"] {
        let sid = handshake(&side)["sid"].as_str().unwrap().to_owned();
        let connect = format!("40{}", json!({"token": support::tokens::token(user)}));
        let (status, _) = side.http("POST", &polling(Some(&sid)), &[], &connect);
        assert_eq!(status, 200);
    }
    support::wait_for("two open", Duration::from_secs(5), || async {
        (side.total_connections() == 2).then_some(())
    })
    .await;
    let (status, _) = side.get(&polling(None));
    assert_eq!(status, 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_abandoned_polling_sessions_are_closed_and_freed() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(
        &redis,
        "a",
        &[
            ("RTS_SOCKETIO_PING_INTERVAL_MS", "500"),
            ("RTS_SOCKETIO_PING_TIMEOUT_MS", "300"),
            ("RTS_MAX_UNAUTHENTICATED", "2000"),
            ("RTS_MAX_UNAUTHENTICATED_PER_IP", "2000"),
            ("RTS_MAX_CONNECTIONS", "5000"),
        ],
    )
    .await;
    let before = support::rss_bytes(side.pid());
    // Five rounds: memory the first round's sessions held is reused by the
    // next ones (the allocator keeps it, per thread; RSS then moves by up to
    // ~10 MB from round to round), while a leak (~20 KB a session, the
    // first round's growth) would add as much again every round: four
    // times the first round's growth by the last.
    let mut after_round = Vec::new();
    for _ in 0..5 {
        for _ in 0..1000 {
            handshake(&side);
        }
        // Never polled again: each is closed a ping timeout after a ping.
        support::wait_for("every session closed", Duration::from_secs(30), || async {
            (side.total_connections() == 0).then_some(())
        })
        .await;
        after_round.push(support::rss_bytes(side.pid()));
    }
    let (status, body) = side.get(&polling(Some("gone")));
    assert_eq!((status, error_of(&body)["code"].clone()), (400, json!(1)));
    eprintln!(
        "RSS before {} KiB; after each round of 1000 abandoned sessions closed: {:?} KiB",
        before / 1024,
        after_round.iter().map(|r| r / 1024).collect::<Vec<_>>()
    );
    let first = after_round[0].saturating_sub(before);
    let later = after_round[4].saturating_sub(after_round[0]);
    assert!(
        later < first,
        "four more rounds grew {later} bytes, the first {first}: a leak: {after_round:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_answers_only_the_allowed_origins() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_CORS_ORIGINS", "https://app.example")]).await;
    let headers = |origin: &str| {
        let (status, raw) = side.http_raw("GET", &polling(None), &[("Origin", origin)], "");
        (status, raw.to_ascii_lowercase())
    };
    let (status, raw) = headers("https://app.example");
    assert_eq!(status, 200);
    assert!(
        raw.contains("access-control-allow-origin: https://app.example"),
        "{raw}"
    );
    let (_, raw) = headers("https://evil.example");
    assert!(!raw.contains("access-control-allow-origin"), "{raw}");
    let (status, _) = side.http(
        "OPTIONS",
        &polling(None),
        &[("Origin", "https://app.example")],
        "",
    );
    assert_eq!(status, 204);
}
