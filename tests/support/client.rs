//! A small protocol client: connects, sends `[event, data, rid]`, waits for
//! answers and events with deadlines, and reports close codes.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::sidecar::Sidecar;
use super::tokens;

pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enc {
    MsgPack,
    Json,
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub enc: Enc,
    next_rid: u64,
    /// Frames received but not yet consumed: (event, data, rid).
    pub inbox: VecDeque<(String, Value, Option<u64>)>,
    pub close_code: Option<u16>,
    /// Payloads of the pongs received, in order.
    pub pongs: Vec<Vec<u8>>,
    /// Every frame's bytes as received, concatenated: what a test can
    /// search for a byte that must never arrive.
    pub raw: Vec<u8>,
}

impl Client {
    /// Opens a connection; `protocol` is the offered subprotocol, `headers`
    /// extra upgrade headers, `query` the query string.
    pub async fn open(
        side: &Sidecar,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
        query: &str,
    ) -> Client {
        let url = format!("{}{}", side.ws_url(), query);
        let mut req = url.into_client_request().expect("request");
        if let Some(p) = protocol {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(p).expect("header"),
            );
        }
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                    .expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let (ws, _resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket connect");
        Client {
            ws,
            enc: if protocol == Some("rtsync.v1.json") {
                Enc::Json
            } else {
                Enc::MsgPack
            },
            next_rid: 1,
            inbox: VecDeque::new(),
            close_code: None,
            pongs: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// Opens a connection from the local address `local` (any of
    /// 127.0.0.0/8 on Linux), without authenticating: another "source
    /// address" on one machine.
    pub async fn open_from(side: &Sidecar, local: std::net::IpAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind((local, 0).into())
            .expect("bind a local address");
        let stream = socket.connect(side.addr).await.expect("tcp connect");
        let req = side.ws_url().into_client_request().expect("request");
        let (ws, _resp) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connect");
        Client {
            ws,
            enc: Enc::MsgPack,
            next_rid: 1,
            inbox: VecDeque::new(),
            close_code: None,
            pongs: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// Connects in `enc` and authenticates with a token of `claims`.
    pub async fn connect_claims(side: &Sidecar, claims: &Value, enc: Enc) -> Client {
        let protocol = match enc {
            Enc::Json => Some("rtsync.v1.json"),
            Enc::MsgPack => None,
        };
        let mut c = Client::open(side, protocol, &[], "").await;
        let token = tokens::hs256(claims);
        c.request_ok("authenticate", json!({"token": token})).await;
        c.expect_event("authenticated").await;
        c
    }

    /// Whether `needle` is anywhere in the bytes received so far.
    pub fn received_bytes(&self, needle: &[u8]) -> bool {
        self.raw.windows(needle.len()).any(|w| w == needle)
    }

    /// Connects and authenticates `user` with a token (MessagePack).
    pub async fn connect(side: &Sidecar, user: &str) -> Client {
        let mut c = Client::open(side, None, &[], "").await;
        let token = tokens::token(user);
        c.request_ok("authenticate", json!({"token": token})).await;
        c.expect_event("authenticated").await;
        c
    }

    /// Connects with the JSON subprotocol and authenticates `user`.
    pub async fn connect_json(side: &Sidecar, user: &str) -> Client {
        let mut c = Client::open(side, Some("rtsync.v1.json"), &[], "").await;
        let token = tokens::token(user);
        c.request_ok("authenticate", json!({"token": token})).await;
        c.expect_event("authenticated").await;
        c
    }

    /// Connects, authenticates and subscribes to `table`.
    pub async fn subscribed(side: &Sidecar, user: &str, table: &str) -> Client {
        let mut c = Client::connect(side, user).await;
        c.request_ok(
            "subscribe_to_table",
            json!({"tableId": table, "viewId": "v1"}),
        )
        .await;
        c
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// Sends a frame; false once the connection is gone (the server may
    /// close it while a test floods it).
    pub async fn try_send_raw(&mut self, msg: Message) -> bool {
        self.ws.send(msg).await.is_ok()
    }

    pub async fn send(&mut self, event: &str, data: Value, rid: Option<u64>) {
        let frame = match rid {
            Some(r) => json!([event, data, r]),
            None => json!([event, data]),
        };
        let msg = match self.enc {
            Enc::Json => Message::Text(frame.to_string().into()),
            Enc::MsgPack => {
                Message::Binary(rmp_serde::to_vec_named(&frame).expect("encode").into())
            }
        };
        self.send_raw(msg).await;
    }

    /// Sends a request and waits for its `ack` (Ok) or `error` (Err).
    pub async fn request(&mut self, event: &str, data: Value) -> Result<Value, Value> {
        let rid = self.next_rid;
        self.next_rid += 1;
        self.send(event, data, Some(rid)).await;
        let (name, data, _) = self
            .take(|(e, _, r)| (e == "ack" || e == "error") && *r == Some(rid))
            .await
            .unwrap_or_else(|| panic!("no answer to {event} (rid {rid})"));
        if name == "ack" {
            Ok(data)
        } else {
            Err(data)
        }
    }

    pub async fn request_ok(&mut self, event: &str, data: Value) -> Value {
        match self.request(event, data).await {
            Ok(v) => v,
            Err(e) => panic!("{event} failed: {e}"),
        }
    }

    /// Reads one frame from the socket within `timeout`; false on close or timeout.
    async fn read_one(&mut self, timeout: Duration) -> bool {
        let Ok(next) = tokio::time::timeout(timeout, self.ws.next()).await else {
            return false;
        };
        let value: Value = match next {
            Some(Ok(Message::Binary(b))) => {
                self.raw.extend_from_slice(&b);
                rmp_serde::from_slice(&b).expect("server sent invalid msgpack")
            }
            Some(Ok(Message::Text(t))) => {
                self.raw.extend_from_slice(t.as_bytes());
                serde_json::from_str(&t).expect("server sent invalid json")
            }
            Some(Ok(Message::Close(frame))) => {
                self.close_code = Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                return false;
            }
            Some(Ok(Message::Pong(p))) => {
                self.pongs.push(p.to_vec());
                return true;
            }
            Some(Ok(_)) => return true,
            Some(Err(_)) | None => {
                if self.close_code.is_none() {
                    self.close_code = Some(1006);
                }
                return false;
            }
        };
        let arr = value.as_array().expect("frame is an array");
        let event = arr[0].as_str().expect("event name").to_owned();
        let data = arr.get(1).cloned().unwrap_or(Value::Null);
        let rid = arr.get(2).and_then(Value::as_u64);
        self.inbox.push_back((event, data, rid));
        true
    }

    /// Removes and returns the first frame matching `pred`, reading more
    /// frames until `WAIT` passes.
    pub async fn take<F>(&mut self, pred: F) -> Option<(String, Value, Option<u64>)>
    where
        F: Fn(&(String, Value, Option<u64>)) -> bool,
    {
        self.take_within(WAIT, pred).await
    }

    pub async fn take_within<F>(
        &mut self,
        timeout: Duration,
        pred: F,
    ) -> Option<(String, Value, Option<u64>)>
    where
        F: Fn(&(String, Value, Option<u64>)) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.inbox.iter().position(&pred) {
                return self.inbox.remove(pos);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || self.close_code.is_some() {
                return None;
            }
            if !self.read_one(left).await && self.close_code.is_some() {
                return self
                    .inbox
                    .iter()
                    .position(&pred)
                    .and_then(|p| self.inbox.remove(p));
            }
        }
    }

    /// The next frame in arrival order (whatever it is), within `timeout`.
    /// Ordering tests read with this alone, so nothing is skipped.
    pub async fn next(&mut self, timeout: Duration) -> Option<(String, Value, Option<u64>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.inbox.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || self.close_code.is_some() || !self.read_one(left).await {
                break;
            }
        }
        self.inbox.pop_front()
    }

    /// Sends a request without waiting; returns its rid.
    pub async fn send_request(&mut self, event: &str, data: Value) -> u64 {
        let rid = self.next_rid;
        self.next_rid += 1;
        self.send(event, data, Some(rid)).await;
        rid
    }

    pub async fn expect_event(&mut self, event: &str) -> Value {
        self.take(|(e, _, _)| e == event)
            .await
            .unwrap_or_else(|| panic!("no {event} event; inbox: {:?}", self.inbox))
            .1
    }

    /// Collects change events (`record_change` and the contents of
    /// `batch_changes`) until `count` arrived or `timeout` passed.
    pub async fn changes(&mut self, count: usize, timeout: Duration) -> Vec<Value> {
        self.collect(&["record_change", "batch_changes"], count, timeout)
            .await
    }

    /// Like [`Client::changes`], counting `missed_events` too (recovery).
    pub async fn all_events(&mut self, count: usize, timeout: Duration) -> Vec<Value> {
        self.collect(
            &["record_change", "batch_changes", "missed_events"],
            count,
            timeout,
        )
        .await
    }

    /// Change events from frames named in `kinds` (a list frame counts
    /// each of its events).
    async fn collect(&mut self, kinds: &[&str], count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((event, data, _)) = self
                .take_within(left, |(e, _, _)| kinds.contains(&e.as_str()))
                .await
            else {
                break;
            };
            if event == "record_change" {
                out.push(data);
            } else {
                out.extend(data.as_array().cloned().unwrap_or_default());
            }
        }
        out
    }

    /// Reads frames (keeping them in the inbox) until `n` pongs arrived or
    /// `WAIT` passed; the pongs' payloads.
    pub async fn pongs(&mut self, n: usize) -> Vec<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.pongs.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || self.close_code.is_some() {
                break;
            }
            self.read_one(left).await;
        }
        self.pongs.clone()
    }

    /// Waits for the server to close the connection; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.close_code.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            self.read_one(left).await;
        }
        self.close_code
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A `record_change` request payload.
pub fn change(table: &str, record: &str, field: &str, value: Value) -> Value {
    json!({
        "type": "update", "recordId": record, "tableId": table, "baseId": "b1",
        "changes": [{"fieldId": field, "newValue": value}],
    })
}
