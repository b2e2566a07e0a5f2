//! Engine.IO v4's transport behaviours on `/socket.io/` (docs/protocol.md
//! section 10), as Engine.IO's own protocol suite expects them, by raw
//! packets against a sidecar: the client's close, a second WebSocket after
//! an upgrade, the ping timeout of a long-polling session, the first ping's
//! time, and Socket.IO's DISCONNECT (`41`), which leaves the socket but not
//! the connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{RedisServer, Sidecar};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);
/// The fast heartbeat of Engine.IO's protocol suite.
const FAST: [(&str, &str); 2] = [
    ("RTS_SOCKETIO_PING_INTERVAL_MS", "300"),
    ("RTS_SOCKETIO_PING_TIMEOUT_MS", "200"),
];
const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(200);

fn polling(sid: &str) -> String {
    format!("/socket.io/?EIO=4&transport=polling&sid={sid}")
}

fn code_of(body: &str) -> Value {
    serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["code"].clone()
}

/// A long-polling handshake: the sid, and when its answer came (the
/// session opened before).
fn handshake(side: &Sidecar) -> (String, Instant) {
    let (status, body) = side.get("/socket.io/?EIO=4&transport=polling");
    let at = Instant::now();
    assert_eq!(status, 200, "{body}");
    let open: Value = serde_json::from_str(body.strip_prefix('0').unwrap()).unwrap();
    (open["sid"].as_str().unwrap().to_owned(), at)
}

/// A GET of `sid` on a thread of its own (it may be parked a while).
fn spawn_get(side: &Arc<Sidecar>, sid: &str) -> tokio::task::JoinHandle<(u16, String)> {
    let (side, path) = (side.clone(), polling(sid));
    tokio::task::spawn_blocking(move || side.get(&path))
}

/// A WebSocket naming the polling session `sid` (an upgrade).
async fn websocket(side: &Sidecar, sid: &str) -> Result<Ws, String> {
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={sid}",
        side.addr
    );
    tokio_tungstenite::connect_async(url)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// The next text message within `timeout`; `None` at a close, an error or
/// the deadline.
async fn next_text(ws: &mut Ws, timeout: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Whether the socket ends (a close frame, an error or its end) within
/// `timeout`, skipping what comes before.
async fn closes_within(ws: &mut Ws, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_) | Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

/// Upgrades the polling session `sid`: `2probe`, `3probe`, `5`.
async fn upgrade(side: &Sidecar, sid: &str) -> Ws {
    let mut ws = websocket(side, sid).await.expect("the upgrade accepted");
    send(&mut ws, "2probe").await;
    assert_eq!(next_text(&mut ws, WAIT).await.as_deref(), Some("3probe"));
    send(&mut ws, "5").await;
    ws
}

/// A WebSocket session: the socket, and when its `open` packet came.
async fn open_websocket(side: &Sidecar) -> (Ws, Instant) {
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", side.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let open = next_text(&mut ws, WAIT).await.expect("open");
    assert!(open.starts_with('0'), "{open}");
    (ws, Instant::now())
}

fn authenticated_users(side: &Sidecar) -> u64 {
    let (_, v) = side.api("GET", "/api/v1/sync/stats", &Value::Null);
    v["data"]["authenticatedUsers"].as_u64().unwrap_or(u64::MAX)
}

// 1. The client's close.

#[tokio::test(flavor = "multi_thread")]
async fn a_client_close_over_polling_answers_the_parked_get_with_a_noop_and_forgets_the_sid() {
    let redis = RedisServer::start().await;
    let side = Arc::new(Sidecar::start(&redis, "a", &[]).await);
    // As Engine.IO's suite does: the GET and the closing POST at once, on
    // two connections (whichever the server handles first), five times.
    for _ in 0..5 {
        let (sid, _) = handshake(&side);
        let started = Instant::now();
        let get = spawn_get(&side, &sid);
        let post = {
            let (side, path) = (side.clone(), polling(&sid));
            tokio::task::spawn_blocking(move || side.http("POST", &path, &[], "1"))
        };
        let (status, body) = post.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "ok"));
        let (status, body) = get.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "6"), "a no-op, not a close");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered at once"
        );
        let (status, body) = side.get(&polling(&sid));
        assert_eq!((status, code_of(&body)), (400, json!(1)), "{body}");
    }
    support::wait_for("the sessions closed", WAIT, || async {
        (side.total_connections() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_close_over_websocket_closes_the_socket() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let (mut ws, _) = open_websocket(&side).await;
    send(&mut ws, "1").await;
    assert!(closes_within(&mut ws, Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_close_after_an_upgrade_closes_the_websocket_and_forgets_the_sid_at_once() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let (sid, _) = handshake(&side);
    let mut ws = upgrade(&side, &sid).await;
    send(&mut ws, "1").await;
    assert!(closes_within(&mut ws, Duration::from_secs(2)).await);
    // Forgotten, not refused as a poll after the upgrade (code 3).
    let (status, body) = side.get(&polling(&sid));
    assert_eq!((status, code_of(&body)), (400, json!(1)), "{body}");
}

// 2. A second WebSocket after the upgrade.

#[tokio::test(flavor = "multi_thread")]
async fn a_second_websocket_after_the_upgrade_is_accepted_and_closed() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let (sid, _) = handshake(&side);
    let mut first = upgrade(&side, &sid).await;
    // The upgrade is the server's once `5` was read: a CONNECT after it is
    // answered over the WebSocket.
    send(&mut first, "40").await;
    let connected = next_text(&mut first, WAIT).await.unwrap();
    assert!(connected.starts_with("40{\"sid\""), "{connected}");
    let second = websocket(&side, &sid).await;
    let mut second = second.expect("101 Switching Protocols, not an HTTP error");
    assert!(
        closes_within(&mut second, Duration::from_secs(2)).await,
        "closed by the server"
    );
    // Polling with the sid is still refused; the first socket still works.
    let (status, _) = side.get(&polling(&sid));
    assert_eq!(status, 400);
    send(&mut first, "2").await;
    assert_eq!(next_text(&mut first, WAIT).await.as_deref(), Some("3"));
}

// 3. The ping timeout of a long-polling session.

#[tokio::test(flavor = "multi_thread")]
async fn a_never_polled_session_is_gone_at_ping_interval_plus_ping_timeout() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &FAST).await;
    let (sid, opened) = handshake(&side);
    // Engine.IO's suite: the protocol's duration, then one GET.
    tokio::time::sleep_until((opened + INTERVAL + TIMEOUT + Duration::from_millis(100)).into())
        .await;
    let (status, body) = side.get(&polling(&sid));
    assert_eq!((status, code_of(&body)), (400, json!(1)), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_polled_session_that_does_not_answer_the_ping_is_gone_at_interval_plus_timeout() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &FAST).await;
    let (sid, opened) = handshake(&side);
    let (status, body) = side.get(&polling(&sid));
    assert_eq!((status, body.as_str()), (200, "2"), "the first ping");
    // No pong: gone a ping timeout after the ping, and its sid with it (not
    // after the writer's grace).
    tokio::time::sleep_until((opened + INTERVAL + TIMEOUT + Duration::from_millis(100)).into())
        .await;
    let (status, body) = side.get(&polling(&sid));
    assert_eq!((status, code_of(&body)), (400, json!(1)), "{body}");
}

// 4. The first ping comes after pingInterval.

#[tokio::test(flavor = "multi_thread")]
async fn no_ping_before_ping_interval_over_websocket() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &FAST).await;
    let (mut ws, opened) = open_websocket(&side).await;
    let ping = next_text(&mut ws, WAIT).await;
    let after = opened.elapsed();
    assert_eq!(ping.as_deref(), Some("2"));
    assert!(after + Duration::from_millis(20) >= INTERVAL, "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_ping_before_ping_interval_over_polling() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &FAST).await;
    let (sid, opened) = handshake(&side);
    let (status, body) = side.get(&polling(&sid));
    let after = opened.elapsed();
    assert_eq!((status, body.as_str()), (200, "2"));
    assert!(after + Duration::from_millis(20) >= INTERVAL, "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_first_polled_after_ping_interval_is_pinged_at_once() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &FAST).await;
    // Its heartbeat runs from the handshake, not from its first poll: the
    // ping due at pingInterval is sent at once.
    let (sid, opened) = handshake(&side);
    tokio::time::sleep_until((opened + INTERVAL + Duration::from_millis(50)).into()).await;
    let (status, body) = side.get(&polling(&sid));
    assert_eq!((status, body.as_str()), (200, "2"));
    assert!(opened.elapsed() < INTERVAL + TIMEOUT, "at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn while_upgrading_gets_are_answered_with_a_noop_never_a_ping() {
    let redis = RedisServer::start().await;
    let side = Arc::new(
        Sidecar::start(
            &redis,
            "a",
            &[
                ("RTS_SOCKETIO_PING_INTERVAL_MS", "1000"),
                ("RTS_SOCKETIO_PING_TIMEOUT_MS", "500"),
            ],
        )
        .await,
    );
    let (sid, opened) = handshake(&side);
    let parked = spawn_get(&side, &sid);
    let mut ws = websocket(&side, &sid).await.unwrap();
    send(&mut ws, "2probe").await;
    assert_eq!(next_text(&mut ws, WAIT).await.as_deref(), Some("3probe"));
    // The GET parked before the probe (or arriving just after it).
    assert_eq!(parked.await.unwrap(), (200, "6".to_owned()));
    // A GET after the probe: a no-op at once.
    let asked = Instant::now();
    assert_eq!(side.get(&polling(&sid)), (200, "6".to_owned()));
    assert!(asked.elapsed() < Duration::from_millis(500), "at once");
    assert!(opened.elapsed() < Duration::from_secs(1), "before any ping");
    send(&mut ws, "5").await;
    // The first ping, over the WebSocket, a ping interval after the open.
    assert_eq!(next_text(&mut ws, WAIT).await.as_deref(), Some("2"));
    assert!(opened.elapsed() >= Duration::from_millis(980));
}

/// Sends `40{auth}` for `user`, waits for the CONNECT answer and
/// `authenticated`, then subscribes to table `t` (ack id `id`); the
/// connection's id.
async fn connect_and_subscribe(ws: &mut Ws, user: &str, id: u64) -> String {
    let auth = json!({"token": support::tokens::token(user)});
    send(ws, &format!("40{auth}")).await;
    let mut connected = false;
    let mut conn_id = None;
    while !(connected && conn_id.is_some()) {
        let t = next_text(ws, WAIT)
            .await
            .expect("connected and authenticated");
        if t == "2" {
            send(ws, "3").await;
        } else if t.starts_with("40{") {
            connected = true;
        } else if let Some(body) = t.strip_prefix("42[\"authenticated\",") {
            let v: Value = serde_json::from_str(&body[..body.len() - 1]).unwrap();
            conn_id = v["connectionId"].as_str().map(str::to_owned);
        } else {
            panic!("unexpected {t}");
        }
    }
    let body = json!(["subscribe_to_table", {"tableId": "t", "viewId": "v1"}]);
    send(ws, &format!("42{id}{body}")).await;
    loop {
        let t = next_text(ws, WAIT).await.expect("the subscription's ack");
        if t == "2" {
            send(ws, "3").await;
        } else if t.starts_with(&format!("43{id}")) {
            assert!(!t.contains("\"error\""), "{t}");
            break;
        }
    }
    conn_id.unwrap()
}

// 5. Socket.IO's DISCONNECT leaves the socket, not the connection.

#[tokio::test(flavor = "multi_thread")]
async fn a_socketio_disconnect_leaves_the_socket_and_keeps_the_connection_and_its_heartbeat() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(
        &redis,
        "a",
        &[
            FAST[0],
            FAST[1],
            ("RTS_MAX_CONNECTIONS_PER_USER", "1"),
            ("RTS_PRESENCE_GRACE_MS", "100"),
        ],
    )
    .await;
    let (mut ws, _) = open_websocket(&side).await;
    let conn = connect_and_subscribe(&mut ws, "u1", 1).await;
    let store = redis.conn().await;
    let presence = |store: &rtsync::store::Conn| {
        let mut store = store.clone();
        async move {
            let doc: Option<String> = redis::cmd("HGET")
                .arg("rts:{t}:presence")
                .arg("u1")
                .query_async(&mut store)
                .await
                .ok()
                .flatten();
            doc.unwrap_or_default()
        }
    };
    assert!(presence(&store).await.contains(&conn), "present");
    assert_eq!(authenticated_users(&side), 1);

    send(&mut ws, "41").await;
    support::wait_for("the socket's identity left", WAIT, || async {
        (authenticated_users(&side) == 0).then_some(())
    })
    .await;
    support::wait_for("the socket's presence left", WAIT, || async {
        (!presence(&store).await.contains(&conn)).then_some(())
    })
    .await;
    // The Engine.IO connection goes on: pings for several ping timeouts,
    // answered, and the socket stays open.
    let until = Instant::now() + 3 * (INTERVAL + TIMEOUT);
    let mut pings = 0;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                pings += 1;
                send(&mut ws, "3").await;
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the connection ended: {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} pings");
    // A CONNECT again is answered like the first: authenticated again (the
    // user's one connection was given back) and subscribed again.
    let again = connect_and_subscribe(&mut ws, "u1", 2).await;
    assert_eq!(again, conn);
    assert_eq!(authenticated_users(&side), 1);
    assert!(presence(&store).await.contains(&conn), "present again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socketio_disconnect_over_polling_keeps_the_engineio_session() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &FAST).await;
    let (sid, _) = handshake(&side);
    let connect = format!("40{}", json!({"token": support::tokens::token("u1")}));
    assert_eq!(side.http("POST", &polling(&sid), &[], &connect).0, 200);
    let (_, body) = side.get(&polling(&sid));
    assert!(body.starts_with("40{"), "{body}");
    assert_eq!(side.http("POST", &polling(&sid), &[], "41").0, 200);
    // Pinged and answered for several ping timeouts: the session lives on.
    let until = Instant::now() + 3 * (INTERVAL + TIMEOUT);
    let mut pings = 0;
    while Instant::now() < until {
        let (status, body) = side.get(&polling(&sid));
        assert_eq!(status, 200, "{body}");
        for packet in body.split('\x1e') {
            match packet {
                "2" => {
                    pings += 1;
                    assert_eq!(side.http("POST", &polling(&sid), &[], "3").0, 200);
                }
                p => assert!(p.starts_with("42["), "unexpected {p}"),
            }
        }
    }
    assert!(pings >= 3, "{pings} pings");
    assert_eq!(authenticated_users(&side), 0);
}
