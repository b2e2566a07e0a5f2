//! Engine.IO long-polling on `/socket.io/` (docs/protocol.md section 10), by
//! raw HTTP requests: the handshake, Engine.IO's errors, one GET and one
//! POST at a time, the payload bound, the connection limit, abandoned
//! sessions freed, handshake floods and trickled bodies, CORS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::IpAddr;
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
    assert!(
        raw.contains("access-control-allow-credentials: true"),
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

/// `n` handshakes pipelined on one HTTP/1.1 connection from the local
/// address `from` (any of 127.0.0.0/8 on Linux): the status of each answer
/// and the sids opened, in order.
async fn pipelined_handshakes(side: &Sidecar, from: IpAddr, n: usize) -> (Vec<u16>, Vec<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    let mut stream = socket.connect(side.addr).await.unwrap();
    let mut requests = String::new();
    for i in 0..n {
        let close = if i + 1 == n {
            "Connection: close\r\n"
        } else {
            ""
        };
        requests.push_str(&format!(
            "GET {} HTTP/1.1\r\nHost: x\r\n{close}\r\n",
            polling(None)
        ));
    }
    stream.write_all(requests.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .expect("the answers within a minute")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw);
    let statuses = raw
        .split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|r| r.get(..3)?.parse().ok())
        .collect();
    let sids = raw
        .split("\"sid\":\"")
        .skip(1)
        .filter_map(|r| Some(r.split_once('"')?.0.to_owned()))
        .collect();
    (statuses, sids)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_flood_from_one_address_evicts_its_oldest_and_never_locks_out_another() {
    let redis = RedisServer::start().await;
    let side = Arc::new(
        Sidecar::start(
            &redis,
            "a",
            &[
                // Room for 80 more than the waiting connections (the evicted
                // ones' tasks may run a moment after their eviction).
                ("RTS_MAX_CONNECTIONS", "100"),
                ("RTS_MAX_UNAUTHENTICATED", "20"),
                ("RTS_MAX_UNAUTHENTICATED_PER_IP", "5"),
            ],
        )
        .await,
    );
    let flooder: IpAddr = "127.0.0.2".parse().unwrap();
    // Four connections of pipelined handshakes from one address while a
    // user on another address opens sessions.
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let side = side.clone();
            tokio::spawn(async move { pipelined_handshakes(&side, flooder, 300).await })
        })
        .collect();
    let mut user = Vec::new();
    while !floods.iter().all(tokio::task::JoinHandle::is_finished) {
        let side = side.clone();
        user.push(
            tokio::task::spawn_blocking(move || side.get(&polling(None)).0)
                .await
                .unwrap(),
        );
    }
    let mut flood_statuses = Vec::new();
    let mut flood_sids = Vec::new();
    for f in floods {
        let (statuses, sids) = f.await.unwrap();
        flood_statuses.extend(statuses);
        flood_sids.push(sids);
    }
    for _ in 0..5 {
        user.push(side.get(&polling(None)).0);
    }
    assert!(
        user.iter().all(|s| *s == 200),
        "the other address always got in: {user:?}"
    );
    let refused = flood_statuses.iter().filter(|s| **s != 200).count();
    eprintln!(
        "the flood: {} answers, {refused} refused; the user: {} handshakes, all 200",
        flood_statuses.len(),
        user.len()
    );
    // The flooder's oldest sessions were closed to admit its newer ones.
    let oldest = flood_sids[0]
        .first()
        .expect("the flood opened sessions")
        .clone();
    support::wait_for(
        "the oldest flooded session gone",
        Duration::from_secs(5),
        || async {
            let (status, body) = side.get(&polling(Some(&oldest)));
            (status == 400 && error_of(&body)["code"] == 1).then_some(())
        },
    )
    .await;
    let (_, metrics) = side.get("/metrics");
    assert!(metrics.contains("unauthenticated_evicted"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_never_polled_session_holds_a_few_kilobytes() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(
        &redis,
        "a",
        &[
            ("RTS_MAX_UNAUTHENTICATED", "5000"),
            ("RTS_MAX_UNAUTHENTICATED_PER_IP", "5000"),
            ("RTS_MAX_CONNECTIONS", "10000"),
        ],
    )
    .await;
    const N: usize = 2000;
    // Warm up the allocator and the runtime's threads with a first round.
    let (statuses, _) = pipelined_handshakes(&side, [127, 0, 0, 1].into(), 200).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let before = support::rss_bytes(side.pid());
    let (statuses, sids) = pipelined_handshakes(&side, [127, 0, 0, 1].into(), N).await;
    assert_eq!((statuses.len(), sids.len()), (N, N));
    support::wait_for("every session open", Duration::from_secs(10), || async {
        (side.total_connections() == (N + 200) as u64).then_some(())
    })
    .await;
    let after = support::rss_bytes(side.pid());
    let per_session = after.saturating_sub(before) / N as u64;
    eprintln!(
        "RSS {} KiB -> {} KiB over {N} never-polled sessions: {per_session} bytes each",
        before / 1024,
        after / 1024
    );
    assert!(per_session < 8 * 1024, "{per_session} bytes a session");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickled_post_body_is_cut_at_the_body_timeout() {
    use std::io::{Read, Write};
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let sid = handshake(&side)["sid"].as_str().unwrap().to_owned();
    // Authenticated, so only the body's deadline can end the POST.
    let connect = format!("40{}", json!({"token": support::tokens::token("u")}));
    let (status, _) = side.http("POST", &polling(Some(&sid)), &[], &connect);
    assert_eq!(status, 200);
    let mut s = std::net::TcpStream::connect(side.addr).unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n4",
        polling(Some(&sid))
    );
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    // A byte every 200 ms, until the sidecar answers or closes.
    let mut answer = Vec::new();
    let cut = loop {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break started.elapsed(),
        }
        if !answer.is_empty() && answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the trickled body is still held after {:?}",
            started.elapsed()
        );
        if s.write_all(b"x").is_err() {
            break started.elapsed();
        }
    };
    eprintln!(
        "a trickled POST body cut after {cut:?}: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        cut >= Duration::from_secs(9) && cut < Duration::from_secs(15),
        "cut after {cut:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_any_origin_is_answered_with_a_star_and_no_credentials() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_CORS_ORIGINS", "*")]).await;
    for origin in ["https://evil.example", "null"] {
        let (status, raw) = side.http_raw("GET", &polling(None), &[("Origin", origin)], "");
        let raw = raw.to_ascii_lowercase();
        assert_eq!(status, 200);
        assert!(raw.contains("access-control-allow-origin: *\r\n"), "{raw}");
        assert!(!raw.contains(&format!("allow-origin: {origin}")), "{raw}");
        assert!(!raw.contains("access-control-allow-credentials"), "{raw}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_never_echoes_a_null_origin() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(
        &redis,
        "a",
        &[("RTS_CORS_ORIGINS", "https://app.example,null")],
    )
    .await;
    let (status, raw) = side.http_raw("GET", &polling(None), &[("Origin", "null")], "");
    let raw = raw.to_ascii_lowercase();
    assert_eq!(status, 200);
    assert!(!raw.contains("access-control-allow-origin"), "{raw}");
    assert!(!raw.contains("access-control-allow-credentials"), "{raw}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payload_of_many_tiny_packets_is_never_a_list_of_them() {
    let redis = RedisServer::start().await;
    let side = Arc::new(Sidecar::start(&redis, "a", &[]).await);
    let sids: Vec<String> = (0..20)
        .map(|_| handshake(&side)["sid"].as_str().unwrap().to_owned())
        .collect();
    let before = support::peak_rss_bytes(side.pid());
    // 1 MiB of noops: half a million packets in one body, before any token.
    let body = "6\u{1e}".repeat(512 * 1024 - 1) + "6";
    let posts: Vec<_> = sids
        .into_iter()
        .map(|sid| {
            let (side, body) = (side.clone(), body.clone());
            std::thread::spawn(move || side.http("POST", &polling(Some(&sid)), &[], &body))
        })
        .collect();
    for p in posts {
        p.join().unwrap();
    }
    let grown = support::peak_rss_bytes(side.pid()).saturating_sub(before);
    assert!(
        grown < 100 * MB,
        "20 payloads grew the sidecar by {grown} bytes"
    );
    assert_eq!(side.get("/healthz").0, 200);
}
