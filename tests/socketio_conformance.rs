//! The Engine.IO v4 and Socket.IO v5 protocols, as their published
//! documents state them, checked on rtsync's standalone layer
//! (`rtsync::socketio::server`) through the conformance server of
//! `examples/socketio_conformance.rs`, run in-process on a free port:
//! handshake, heartbeat and timeout, the upgrade, the polling rules,
//! namespaces, the auth payload, events, acks, binary attachments, bad
//! packets and the connect timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/socketio_conformance.rs"]
mod conformance;
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

/// The conformance server on a free port; stopped when dropped.
struct Conformance {
    addr: String,
    shutdown: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Conformance {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Conformance {
    async fn start() -> Conformance {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shutdown = CancellationToken::new();
        tokio::spawn(conformance::serve(
            listener,
            shutdown.clone(),
            TaskTracker::new(),
        ));
        Conformance {
            addr,
            shutdown,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str, query: &str) -> String {
        format!("http://{}{path}?{query}", self.addr)
    }

    async fn get(&self, path: &str, query: &str) -> (u16, String) {
        let r = self.http.get(self.url(path, query)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, query: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self
            .http
            .post(self.url(path, query))
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A polling handshake: the session's id and its `open` packet.
    async fn open_polling(&self, path: &str) -> (String, Value) {
        let (status, body) = self.get(path, "EIO=4&transport=polling").await;
        assert_eq!(status, 200, "{body}");
        let open: Value = serde_json::from_str(body.strip_prefix('0').unwrap()).unwrap();
        (open["sid"].as_str().unwrap().to_owned(), open)
    }

    async fn poll(&self, path: &str, sid: &str) -> (u16, String) {
        self.get(path, &format!("EIO=4&transport=polling&sid={sid}"))
            .await
    }

    async fn send(&self, path: &str, sid: &str, body: &str) -> (u16, String) {
        self.post(
            path,
            &format!("EIO=4&transport=polling&sid={sid}"),
            body.to_owned(),
        )
        .await
    }

    async fn ws(&self, path: &str, query: &str) -> Ws {
        let url = format!("ws://{}{path}?{query}", self.addr);
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }

    /// A WebSocket-only session, its `open` packet read.
    async fn open_ws(&self, path: &str) -> (Ws, Value) {
        let mut ws = self.ws(path, "EIO=4&transport=websocket").await;
        let open = next(&mut ws).await;
        let open = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
        (ws, open)
    }

    /// A Socket.IO client on the WebSocket, connected to the main
    /// namespace (its CONNECT answer and `auth` event read).
    async fn socketio(&self) -> Ws {
        let (mut ws, _) = self.open_ws("/socket.io/").await;
        send_text(&mut ws, "40").await;
        assert!(next(&mut ws).await.starts_with("40{\"sid\":"));
        assert_eq!(next(&mut ws).await, r#"42["auth",{}]"#);
        ws
    }
}

/// The next message that is not a ping (pings are answered), as text;
/// binary messages as `<binary:…>`; `<closed>` at the end.
async fn next(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within 5 s");
        match msg {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => send_text(ws, "3").await,
            Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
            Some(Ok(Message::Binary(b))) => return format!("<binary:{:?}>", &b[..]),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return "<closed>".to_owned(),
            Some(Ok(_)) => {}
        }
    }
}

/// Reads until the socket ends; true when it does within `limit`
/// (answering nothing: pings are ignored).
async fn closes_within(ws: &mut Ws, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return false,
            Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

fn error_code(body: &str) -> Value {
    serde_json::from_str::<Value>(body).unwrap()["code"].clone()
}

// ---- Engine.IO -----------------------------------------------------------

#[tokio::test]
async fn the_handshake_announces_sid_upgrades_heartbeat_and_max_payload() {
    let c = Conformance::start().await;
    let (sid, open) = c.open_polling("/engine.io/").await;
    assert_eq!(sid.len(), 32);
    assert_eq!(open["upgrades"], json!(["websocket"]));
    assert_eq!(open["pingInterval"], 300);
    assert_eq!(open["pingTimeout"], 200);
    assert_eq!(open["maxPayload"], 1_000_000);
    let (_ws, open) = c.open_ws("/engine.io/").await;
    assert_eq!(open["upgrades"], json!([]), "nothing to upgrade to");
}

#[tokio::test]
async fn a_bad_protocol_version_transport_or_method_is_refused() {
    let c = Conformance::start().await;
    let (s, b) = c.get("/engine.io/", "EIO=3&transport=polling").await;
    assert_eq!((s, error_code(&b)), (400, json!(5)));
    let (s, b) = c.get("/engine.io/", "transport=polling").await;
    assert_eq!((s, error_code(&b)), (400, json!(5)));
    let (s, b) = c.get("/engine.io/", "EIO=4&transport=pigeon").await;
    assert_eq!((s, error_code(&b)), (400, json!(0)));
    let (s, b) = c.get("/engine.io/", "EIO=4").await;
    assert_eq!((s, error_code(&b)), (400, json!(0)));
    let (s, b) = c.post("/engine.io/", "EIO=4&transport=polling", "4x").await;
    assert_eq!((s, error_code(&b)), (400, json!(2)));
}

#[tokio::test]
async fn an_unknown_sid_is_session_id_unknown_at_once() {
    let c = Conformance::start().await;
    let started = Instant::now();
    let (s, b) = c.poll("/engine.io/", "nope").await;
    assert_eq!(s, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap(),
        json!({"code": 1, "message": "Session ID unknown"})
    );
    let (s, b) = c.send("/engine.io/", "nope", "4x").await;
    assert_eq!((s, error_code(&b)), (400, json!(1)));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn polling_echoes_text_and_base64_binary_messages_in_one_body() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    let (s, b) = c
        .send("/engine.io/", &sid, "4hello\u{1e}bAQID\u{1e}4€")
        .await;
    assert_eq!((s, b.as_str()), (200, "ok"));
    let (s, b) = c.poll("/engine.io/", &sid).await;
    assert_eq!((s, b.as_str()), (200, "4hello\u{1e}bAQID\u{1e}4€"));
}

#[tokio::test]
async fn websocket_echoes_text_and_binary_messages() {
    let c = Conformance::start().await;
    let (mut ws, _) = c.open_ws("/engine.io/").await;
    send_text(&mut ws, "4hello").await;
    assert_eq!(next(&mut ws).await, "4hello");
    ws.send(Message::Binary(Bytes::from_static(&[1, 2, 3])))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, "<binary:[1, 2, 3]>");
}

#[tokio::test]
async fn the_server_pings_every_interval_and_a_pong_keeps_the_session() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    let started = Instant::now();
    for _ in 0..3 {
        let (s, b) = c.poll("/engine.io/", &sid).await;
        assert_eq!((s, b.as_str()), (200, "2"));
        assert_eq!(c.send("/engine.io/", &sid, "3").await.0, 200);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "three pings 300 ms apart came in {took:?}"
    );
}

#[tokio::test]
async fn a_late_pong_closes_the_session() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    let (_, b) = c.poll("/engine.io/", &sid).await;
    assert_eq!(b, "2");
    // No pong: after pingTimeout the session is closed. A GET then either
    // gets the close packet or finds the session gone.
    let deadline = Instant::now() + WAIT;
    loop {
        let (s, b) = c.poll("/engine.io/", &sid).await;
        if b == "1" || (s == 400 && error_code(&b) == json!(1)) {
            break;
        }
        assert!(Instant::now() < deadline, "still open: {s} {b}");
    }
    // And on a WebSocket, a client that never pongs is closed.
    let (mut ws, _) = c.open_ws("/engine.io/").await;
    assert!(closes_within(&mut ws, Duration::from_secs(3)).await);
}

#[tokio::test]
async fn the_upgrade_probes_then_moves_the_session_to_the_websocket() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    let parked = {
        let http = c.http.clone();
        let url = c.url("/engine.io/", &format!("EIO=4&transport=polling&sid={sid}"));
        tokio::spawn(async move { http.get(url).send().await.unwrap().text().await.unwrap() })
    };
    let mut ws = c
        .ws(
            "/engine.io/",
            &format!("EIO=4&transport=websocket&sid={sid}"),
        )
        .await;
    send_text(&mut ws, "2probe").await;
    assert_eq!(next(&mut ws).await, "3probe");
    // The parked GET ends with a no-op, so the client stops polling (no
    // ping is due before the interval).
    let body = tokio::time::timeout(WAIT, parked).await.unwrap().unwrap();
    assert_eq!(body, "6");
    send_text(&mut ws, "5").await;
    send_text(&mut ws, "4after the upgrade").await;
    assert_eq!(next(&mut ws).await, "4after the upgrade");
    // Polling requests are refused from now on, and a second upgrade too.
    let (s, b) = c.poll("/engine.io/", &sid).await;
    assert_eq!((s, error_code(&b)), (400, json!(3)));
    let (s, b) = c.send("/engine.io/", &sid, "4x").await;
    assert_eq!((s, error_code(&b)), (400, json!(3)));
    // A second WebSocket is accepted, then closed (ignored).
    let mut again = c
        .ws(
            "/engine.io/",
            &format!("EIO=4&transport=websocket&sid={sid}"),
        )
        .await;
    assert!(closes_within(&mut again, WAIT).await);
    // The session lives on over the WebSocket.
    send_text(&mut ws, "4still here").await;
    assert_eq!(next(&mut ws).await, "4still here");
}

#[tokio::test]
async fn two_gets_at_once_are_refused_and_close_the_session() {
    let c = Conformance::start().await;
    // Two GETs sent together, right after the handshake: one is parked,
    // the other refused; the session is closed, so the parked one ends
    // with the close packet. (Should a ping answer one GET before the
    // other arrives, there was no overlap: try again.)
    for _ in 0..3 {
        let (sid, _) = c.open_polling("/engine.io/").await;
        let (a, b) = tokio::join!(c.poll("/engine.io/", &sid), c.poll("/engine.io/", &sid));
        if a.1 == "2" || b.1 == "2" {
            continue;
        }
        let (refused, parked) = if a.0 == 400 { (a, b) } else { (b, a) };
        assert_eq!((refused.0, error_code(&refused.1)), (400, json!(3)));
        assert_eq!(parked, (200, "1".to_owned()));
        let (s, b) = c.poll("/engine.io/", &sid).await;
        assert_eq!((s, error_code(&b)), (400, json!(1)));
        return;
    }
    panic!("the two GETs never overlapped");
}

#[tokio::test]
async fn two_posts_at_once_are_refused_and_close_the_session() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    // A POST whose body is still arriving holds the session's POST slot.
    let mut slow = TcpStream::connect(&c.addr).await.unwrap();
    let head = format!(
        "POST /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n4partial"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let (s, b) = loop {
        let (s, b) = c.send("/engine.io/", &sid, "4second").await;
        if s == 400 {
            break (s, b);
        }
        // The slow POST's headers were not read yet.
        assert!(Instant::now() < deadline, "never refused");
    };
    assert_eq!((s, error_code(&b)), (400, json!(3)));
    let (s, b) = c.poll("/engine.io/", &sid).await;
    assert_eq!((s, error_code(&b)), (400, json!(1)), "closed");
    drop(slow);
}

#[tokio::test]
async fn a_payload_over_max_payload_is_refused_and_closes_the_session() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    let big = format!("4{}", "x".repeat(2_000_000));
    let (s, b) = c.send("/engine.io/", &sid, &big).await;
    assert_eq!((s, error_code(&b)), (400, json!(3)));
    let (s, b) = c.poll("/engine.io/", &sid).await;
    assert_eq!((s, error_code(&b)), (400, json!(1)));
    // On a WebSocket the message is refused and the socket closed.
    let (mut ws, _) = c.open_ws("/engine.io/").await;
    let _ = ws.send(Message::Text(big.into())).await;
    assert!(closes_within(&mut ws, WAIT).await);
}

#[tokio::test]
async fn a_websocket_client_that_stops_reading_is_closed_not_waited_on() {
    let c = Conformance::start().await;
    let (ws, _) = c.open_ws("/engine.io/").await;
    let (mut tx, mut rx) = ws.split();
    // 40 MB of messages, echoed back to a client that reads none of them:
    // the socket buffers fill and the server's writes stall. It gives the
    // client up after a ping timeout (and stops reading it), so these
    // sends end (done or refused) instead of waiting for ever.
    let chunk = format!("4{}", "x".repeat(200_000));
    let sending = tokio::spawn(async move {
        for _ in 0..200 {
            if tx.send(Message::Text(chunk.clone().into())).await.is_err() {
                return;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), sending)
        .await
        .expect("the server went on waiting on a client that does not read")
        .unwrap();
    let mut echoed = 0;
    loop {
        match tokio::time::timeout(WAIT, rx.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) if t.len() > 1000 => echoed += 1,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    assert!(echoed < 200, "all {echoed} echoes were written");
}

#[tokio::test]
async fn a_polling_client_that_never_polls_is_closed_once_its_queue_passes_the_bound() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    // Pongs keep the session alive; the echoes of ~1 MB messages pile up
    // for a client that never GETs. Past 4 × maxPayload queued, the
    // session is closed (a count bound alone would allow 1 GB).
    let big = format!("4{}\u{1e}3", "x".repeat(999_000));
    for sent in 0..50 {
        let (s, b) = c.send("/engine.io/", &sid, &big).await;
        if s == 400 {
            assert_eq!(error_code(&b), json!(1));
            assert!(sent >= 4, "closed after {sent} MB");
            return;
        }
    }
    panic!("50 MB queued for a client that never polls");
}

#[tokio::test]
async fn a_malformed_polling_body_is_refused_and_closes_the_session() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    let (s, b) = c.send("/engine.io/", &sid, "9nope").await;
    assert_eq!((s, error_code(&b)), (400, json!(3)));
    let (s, b) = c.poll("/engine.io/", &sid).await;
    assert_eq!((s, error_code(&b)), (400, json!(1)));
}

#[tokio::test]
async fn polling_answers_other_origins_with_cors() {
    let c = Conformance::start().await;
    let r = c
        .http
        .get(c.url("/engine.io/", "EIO=4&transport=polling"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    // The conformance server allows any origin (`*`): answered `*`, never
    // with credentials.
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(!r.headers().contains_key("access-control-allow-credentials"));
    let r = c
        .http
        .request(
            reqwest::Method::OPTIONS,
            c.url("/engine.io/", "EIO=4&transport=polling"),
        )
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(r.headers().contains_key("access-control-allow-methods"));
}

#[tokio::test]
async fn a_client_close_packet_ends_the_session() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    assert_eq!(c.send("/engine.io/", &sid, "1").await.0, 200);
    let deadline = Instant::now() + WAIT;
    loop {
        let (s, b) = c.poll("/engine.io/", &sid).await;
        if s == 400 && error_code(&b) == json!(1) {
            break;
        }
        assert!(Instant::now() < deadline, "still open: {s} {b}");
    }
}

#[tokio::test]
async fn a_client_close_over_polling_ends_the_parked_get_with_a_noop() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    let parked = {
        let http = c.http.clone();
        let url = c.url("/engine.io/", &format!("EIO=4&transport=polling&sid={sid}"));
        tokio::spawn(async move { http.get(url).send().await.unwrap().text().await.unwrap() })
    };
    // Whichever of the two is handled first, the poll the close ends gets
    // a no-op (the GET and the POST travel on two connections).
    assert_eq!(c.send("/engine.io/", &sid, "1").await.0, 200);
    let body = tokio::time::timeout(WAIT, parked).await.unwrap().unwrap();
    assert_eq!(body, "6");
    let (s, b) = c.poll("/engine.io/", &sid).await;
    assert_eq!((s, error_code(&b)), (400, json!(1)), "gone at once");
}

#[tokio::test]
async fn a_get_after_the_upgrade_packet_is_refused_even_before_it_was_read() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    let mut ws = c
        .ws(
            "/engine.io/",
            &format!("EIO=4&transport=websocket&sid={sid}"),
        )
        .await;
    send_text(&mut ws, "2probe").await;
    send_text(&mut ws, "5").await;
    let (s, _) = c.poll("/engine.io/", &sid).await;
    assert_eq!(s, 400);
    send_text(&mut ws, "4hello").await;
    assert_eq!(next(&mut ws).await, "3probe");
    assert_eq!(next(&mut ws).await, "4hello");
}

#[tokio::test]
async fn a_second_websocket_while_one_upgrades_is_accepted_then_closed() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    let query = format!("EIO=4&transport=websocket&sid={sid}");
    let mut ws = c.ws("/engine.io/", &query).await;
    send_text(&mut ws, "2probe").await;
    let mut second = c.ws("/engine.io/", &query).await;
    assert!(closes_within(&mut second, WAIT).await);
    send_text(&mut ws, "5").await;
    send_text(&mut ws, "4hello").await;
    assert_eq!(next(&mut ws).await, "3probe");
    assert_eq!(next(&mut ws).await, "4hello");
}

#[tokio::test]
async fn a_silent_polling_session_is_gone_at_ping_interval_plus_timeout() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/engine.io/").await;
    // The protocol's own durations: 300 ms interval + 200 ms timeout.
    tokio::time::sleep(Duration::from_millis(300 + 200 + 50)).await;
    let (s, b) = c.poll("/engine.io/", &sid).await;
    assert_eq!((s, error_code(&b)), (400, json!(1)), "{b}");
}

#[tokio::test]
async fn the_first_ping_comes_after_the_ping_interval() {
    let c = Conformance::start().await;
    let (mut ws, _) = c.open_ws("/engine.io/").await;
    let opened = Instant::now();
    let first = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(Message::Text(ref t))) if t.as_str() == "2"));
    assert!(
        opened.elapsed() >= Duration::from_millis(250),
        "{:?}",
        opened.elapsed()
    );
}

// ---- Socket.IO -----------------------------------------------------------

#[tokio::test]
async fn connect_to_the_main_namespace_answers_its_sid_and_emits_the_auth() {
    let c = Conformance::start().await;
    let (mut ws, _) = c.open_ws("/socket.io/").await;
    send_text(&mut ws, "40").await;
    let connect = next(&mut ws).await;
    let data: Value = serde_json::from_str(connect.strip_prefix("40").unwrap()).unwrap();
    assert_eq!(data["sid"].as_str().map(str::len), Some(32));
    assert_eq!(next(&mut ws).await, r#"42["auth",{}]"#);
}

#[tokio::test]
async fn the_connect_auth_payload_reaches_the_handler() {
    let c = Conformance::start().await;
    let (mut ws, _) = c.open_ws("/socket.io/").await;
    send_text(&mut ws, r#"40{"token":"123"}"#).await;
    assert!(next(&mut ws).await.starts_with("40{\"sid\":"));
    assert_eq!(next(&mut ws).await, r#"42["auth",{"token":"123"}]"#);
    // A CONNECT whose payload is not an object is a bad packet.
    let (mut ws, _) = c.open_ws("/socket.io/").await;
    send_text(&mut ws, r#"40"token""#).await;
    assert!(closes_within(&mut ws, WAIT).await);
}

#[tokio::test]
async fn a_custom_namespace_is_joined_and_an_unknown_one_refused() {
    let c = Conformance::start().await;
    let (mut ws, _) = c.open_ws("/socket.io/").await;
    send_text(&mut ws, "40/custom,").await;
    assert!(next(&mut ws).await.starts_with("40/custom,{\"sid\":"));
    assert_eq!(next(&mut ws).await, r#"42/custom,["auth",{}]"#);
    send_text(&mut ws, r#"42/custom,["message",1]"#).await;
    assert_eq!(next(&mut ws).await, r#"42/custom,["message-back",1]"#);
    send_text(&mut ws, "40/random,").await;
    assert_eq!(
        next(&mut ws).await,
        r#"44/random,{"message":"Invalid namespace"}"#
    );
}

#[tokio::test]
async fn an_event_is_answered_with_the_same_arguments() {
    let c = Conformance::start().await;
    let mut ws = c.socketio().await;
    send_text(&mut ws, r#"42["message",1,"2",{"3":[true]}]"#).await;
    assert_eq!(
        next(&mut ws).await,
        r#"42["message-back",1,"2",{"3":[true]}]"#
    );
}

#[tokio::test]
async fn an_event_with_an_ack_id_is_acknowledged_with_its_arguments() {
    let c = Conformance::start().await;
    let mut ws = c.socketio().await;
    send_text(&mut ws, r#"4213["message-with-ack",1,"2",{"3":[false]}]"#).await;
    assert_eq!(next(&mut ws).await, r#"4313[1,"2",{"3":[false]}]"#);
}

#[tokio::test]
async fn binary_events_and_acks_carry_their_attachments() {
    let c = Conformance::start().await;
    let mut ws = c.socketio().await;
    send_text(
        &mut ws,
        r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
    )
    .await;
    ws.send(Message::Binary(Bytes::from_static(&[1, 2, 3])))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[4, 5, 6])))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(next(&mut ws).await, "<binary:[1, 2, 3]>");
    assert_eq!(next(&mut ws).await, "<binary:[4, 5, 6]>");
    send_text(
        &mut ws,
        r#"451-7["message-with-ack",{"_placeholder":true,"num":0}]"#,
    )
    .await;
    ws.send(Message::Binary(Bytes::from_static(&[9])))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        r#"461-7[{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(next(&mut ws).await, "<binary:[9]>");
}

#[tokio::test]
async fn binary_attachments_travel_as_base64_over_polling() {
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/socket.io/").await;
    c.send("/socket.io/", &sid, "40").await;
    let (_, b) = c.poll("/socket.io/", &sid).await;
    assert!(b.contains("42[\"auth\",{}]"), "{b}");
    let body = "451-[\"message\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQID";
    assert_eq!(c.send("/socket.io/", &sid, body).await.0, 200);
    let deadline = Instant::now() + WAIT;
    let mut got = String::new();
    while !got.contains("bAQID") {
        let (_, b) = c.poll("/socket.io/", &sid).await;
        if b == "2" {
            c.send("/socket.io/", &sid, "3").await;
        }
        got.push_str(&b);
        assert!(Instant::now() < deadline, "{got}");
    }
    assert!(
        got.contains("451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQID"),
        "{got}"
    );
}

#[tokio::test]
async fn after_a_disconnect_from_a_namespace_the_connection_stays_open() {
    let c = Conformance::start().await;
    let mut ws = c.socketio().await;
    send_text(&mut ws, "40/custom").await;
    assert!(next(&mut ws).await.starts_with("40/custom,"));
    assert_eq!(next(&mut ws).await, r#"42/custom,["auth",{}]"#);
    send_text(&mut ws, "41/custom").await;
    send_text(&mut ws, r#"42["message","main"]"#).await;
    assert_eq!(next(&mut ws).await, r#"42["message-back","main"]"#);
    send_text(&mut ws, "41").await;
    // Engine.IO goes on: the pings keep coming, and the pongs keep it.
    for _ in 0..3 {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
        assert!(
            matches!(msg, Some(Ok(Message::Text(ref t))) if t.as_str() == "2"),
            "{msg:?}"
        );
        send_text(&mut ws, "3").await;
    }
}

#[tokio::test]
async fn after_a_disconnect_an_event_to_that_namespace_ends_the_connection() {
    let c = Conformance::start().await;
    let mut ws = c.socketio().await;
    send_text(&mut ws, "41").await;
    send_text(&mut ws, r#"42["message",1]"#).await;
    assert!(closes_within(&mut ws, WAIT).await);
}

#[tokio::test]
async fn malformed_packets_end_the_connection() {
    let c = Conformance::start().await;
    for bad in [
        "4abc",
        "42{\"not\":\"an array\"}",
        "42[\"unterminated",
        "49",
        "4",
        r#"45x-["message"]"#,
        r#"4599-["message"]"#,
    ] {
        let mut ws = c.socketio().await;
        send_text(&mut ws, bad).await;
        assert!(closes_within(&mut ws, WAIT).await, "{bad} was accepted");
    }
    // An attachment nobody announced.
    let mut ws = c.socketio().await;
    ws.send(Message::Binary(Bytes::from_static(&[1])))
        .await
        .unwrap();
    assert!(closes_within(&mut ws, WAIT).await);
}

#[tokio::test]
async fn a_client_that_joins_no_namespace_is_closed_after_the_connect_timeout() {
    let c = Conformance::start().await;
    let (mut ws, _) = c.open_ws("/socket.io/").await;
    let started = Instant::now();
    // Pongs keep Engine.IO's session alive; only the connect timeout ends it.
    let deadline = started + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => send_text(&mut ws, "3").await,
            Some(Ok(Message::Text(t))) if t.as_str() == "1" => {}
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            other => panic!("{other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn a_socketio_session_connects_by_polling_then_upgrades() {
    // socket.io-client's default steps: polling handshake, CONNECT by
    // POST, the upgrade, then events on the WebSocket.
    let c = Conformance::start().await;
    let (sid, _) = c.open_polling("/socket.io/").await;
    c.send("/socket.io/", &sid, "40").await;
    let (_, b) = c.poll("/socket.io/", &sid).await;
    assert!(b.starts_with("40{\"sid\":"), "{b}");
    let mut ws = c
        .ws(
            "/socket.io/",
            &format!("EIO=4&transport=websocket&sid={sid}"),
        )
        .await;
    send_text(&mut ws, "2probe").await;
    assert_eq!(next(&mut ws).await, "3probe");
    send_text(&mut ws, "5").await;
    send_text(&mut ws, r#"42["message","over the socket"]"#).await;
    assert_eq!(
        next(&mut ws).await,
        r#"42["message-back","over the socket"]"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_npm_socketio_client_passes_against_the_conformance_server() {
    let dir = support::node::dir("tests/socketio");
    if !support::node::ready(
        &dir.join("node_modules/socket.io-client"),
        "run scripts/ensure-browser.sh",
    ) {
        return;
    }
    let c = Conformance::start().await;
    let env = vec![("RTSYNC_CONFORMANCE_URL", format!("http://{}", c.addr))];
    let passed = support::node::run_tests(dir, &["conformance.test.mjs"], env).await;
    assert!(passed, "tests/socketio/conformance.test.mjs failed");
}
