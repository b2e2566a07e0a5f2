//! A raw Socket.IO (Engine.IO v4, WebSocket transport, default parser)
//! client for tests that must send what no library would: it speaks
//! packets as text and binary messages and reads them in arrival order.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::sidecar::Sidecar;

pub struct Sio {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub closed: bool,
}

impl Sio {
    /// Opens the WebSocket transport and reads Engine.IO's open packet.
    pub async fn open(side: &Sidecar) -> Sio {
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", side.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("socket.io websocket");
        let mut s = Sio { ws, closed: false };
        let open = s.text(Duration::from_secs(10)).await.expect("open packet");
        assert!(open.starts_with('0'), "{open}");
        s
    }

    /// Opens and connects to the main namespace with `auth` (e.g.
    /// `{"token": ...}`), waiting for the CONNECT answer.
    pub async fn connect(side: &Sidecar, auth: &Value) -> Sio {
        let mut s = Sio::open(side).await;
        s.send_text(&format!("40{auth}")).await;
        let answer = s.packet("40", Duration::from_secs(10)).await;
        assert!(answer.is_some(), "connected");
        s
    }

    pub async fn send_text(&mut self, text: &str) {
        let _ = self.ws.send(Message::text(text.to_owned())).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> bool {
        self.ws.send(Message::binary(bytes)).await.is_ok()
    }

    /// Sends `42<id>["event", data]` and waits for its ack `43<id>[...]`:
    /// the ack's first argument.
    pub async fn request(&mut self, id: u64, event: &str, data: &Value) -> Option<Value> {
        let body = serde_json::json!([event, data]);
        self.send_text(&format!("42{id}{body}")).await;
        let ack = self
            .packet(&format!("43{id}"), Duration::from_secs(10))
            .await?;
        let args: Value = serde_json::from_str(&ack[format!("43{id}").len()..]).ok()?;
        args.get(0).cloned()
    }

    /// The next text message within `timeout`, answering pings; `None`
    /// at a close or the deadline.
    pub async fn text(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Text(t)) if t.as_str() == "2" => self.send_text("3").await,
                Ok(Message::Text(t)) => return Some(t.to_string()),
                Ok(Message::Close(_)) | Err(_) => {
                    self.closed = true;
                    return None;
                }
                Ok(_) => {}
            }
        }
    }

    /// The next text message starting with `prefix`, skipping others.
    pub async fn packet(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let t = self.text(left).await?;
            if t.starts_with(prefix) {
                return Some(t);
            }
        }
    }

    /// Every event `42["name", data]` received within `timeout`, in order.
    pub async fn events(&mut self, timeout: Duration) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(t) = self.text(left).await else {
                return out;
            };
            let Some(body) = t.strip_prefix("42") else {
                continue;
            };
            if let Ok(Value::Array(args)) = serde_json::from_str::<Value>(body) {
                let name = args
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                out.push((name, args.get(1).cloned().unwrap_or(Value::Null)));
            }
        }
    }
}
