//! The two wire protocols the load generator speaks, so one generator can
//! drive rtsync and the Socket.IO peer (`bench/socketio-peer`) with the same
//! load: rtsync's MessagePack frames, or Socket.IO 4 (Engine.IO 4 over a
//! WebSocket, JSON text packets). Everything the scenarios need goes
//! through here: connect and authenticate, subscribe, a stamped change,
//! which request an answer belongs to, the change events of a frame, and the
//! replies a frame asks for (Engine.IO pings).

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, now_us, Event, Ws};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// rtsync's protocol (MessagePack frames).
    Rtsync,
    /// Socket.IO 4 over a WebSocket (the peer of `bench/socketio-peer`).
    Socketio,
}

/// What a received frame is to a scenario.
pub enum Frame {
    /// Change events (one `record_change` or a `batch_changes`).
    Events(Vec<Event>),
    /// The answer to request `rid`: Ok(true) when the change was committed.
    Answer {
        rid: u64,
        committed: bool,
    },
    /// A frame that wants an answer (Engine.IO ping).
    Reply(Message),
    Other,
}

impl Proto {
    /// The URL to open for a server address given as rtsync's `ws://host/ws`
    /// or as the peer's `ws://host` (Socket.IO gets its Engine.IO path).
    fn url(self, url: &str) -> String {
        match self {
            Proto::Rtsync => url.to_owned(),
            Proto::Socketio => {
                let base = url.trim_end_matches('/').trim_end_matches("/ws");
                format!("{base}/socket.io/?EIO=4&transport=websocket")
            }
        }
    }

    /// Connects and authenticates.
    pub async fn connect(
        self,
        url: &str,
        secret: Option<&str>,
        user: &str,
        grant: &Value,
    ) -> Result<Ws> {
        match self {
            Proto::Rtsync => client::connect_as(url, secret, user, grant).await,
            Proto::Socketio => {
                let mut ws = client::open(&self.url(url)).await?;
                // Engine.IO open packet, then the Socket.IO namespace connect.
                let open = next_text(&mut ws).await?;
                if !open.starts_with('0') {
                    bail!("expected an Engine.IO open packet, got {open:?}");
                }
                ws.send(Message::Text("40".into())).await?;
                loop {
                    let t = next_text(&mut ws).await?;
                    if t.starts_with("40") {
                        break;
                    }
                    if t.starts_with("44") {
                        bail!("namespace refused: {t}");
                    }
                }
                self.request(
                    &mut ws,
                    "authenticate",
                    json!({"userId": user, "tables": grant}),
                    0,
                )
                .await?;
                Ok(ws)
            }
        }
    }

    /// Connects, authenticates and subscribes to `table`.
    pub async fn subscriber(
        self,
        url: &str,
        secret: Option<&str>,
        user: &str,
        table: &str,
        grant: &Value,
    ) -> Result<Ws> {
        let mut ws = self.connect(url, secret, user, grant).await?;
        self.request(
            &mut ws,
            "subscribe_to_table",
            json!({"tableId": table, "viewId": "v"}),
            1,
        )
        .await?;
        Ok(ws)
    }

    /// Sends a request and waits for its answer.
    async fn request(self, ws: &mut Ws, event: &str, data: Value, rid: u64) -> Result<()> {
        ws.send(self.encode(event, &data, rid)?).await?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let msg = tokio::time::timeout(left, ws.next())
                .await
                .context("timed out waiting for an answer")?
                .context("connection closed")??;
            match self.parse(&msg) {
                Frame::Answer { rid: r, .. } if r == rid => return Ok(()),
                Frame::Reply(m) => ws.send(m).await?,
                _ => {}
            }
        }
    }

    /// A request frame.
    pub fn encode(self, event: &str, data: &Value, rid: u64) -> Result<Message> {
        match self {
            Proto::Rtsync => client::encode(&json!([event, data, rid])),
            Proto::Socketio => Ok(Message::Text(
                format!("42{rid}{}", serde_json::to_string(&json!([event, data]))?).into(),
            )),
        }
    }

    /// A change whose value carries the send time.
    /// A change stamped with its send time in field `f`; `wide` adds the
    /// fields that `fanout --classes` hides from some subscribers.
    pub fn stamped_change(
        self,
        table: &str,
        record: &str,
        rid: u64,
        wide: bool,
    ) -> Result<Message> {
        let mut stamp = json!({"sentUs": now_us()});
        let pad = client::options().event_bytes;
        if pad > 0 {
            stamp["text"] = json!(prose(now_us() ^ rid, pad.saturating_sub(EVENT_OVERHEAD)));
        }
        let mut changes = vec![json!({"fieldId": "f", "newValue": stamp})];
        if wide {
            changes.extend(
                client::HIDDEN_FIELDS
                    .iter()
                    .map(|f| json!({"fieldId": f, "newValue": {"v": format!("{f}-{rid}")}})),
            );
        }
        self.encode(
            "record_change",
            &json!({"type": "update", "recordId": record, "tableId": table, "baseId": "bench",
                "changes": changes}),
            rid,
        )
    }

    pub fn parse(self, msg: &Message) -> Frame {
        match (self, msg) {
            (Proto::Rtsync, Message::Binary(b)) => match client::event_name(b) {
                Some("record_change" | "batch_changes") => Frame::Events(client::events(b)),
                Some("ack") => match client::answer_rid(b) {
                    Some(rid) => Frame::Answer {
                        rid,
                        committed: client::ack_committed(b),
                    },
                    None => Frame::Other,
                },
                Some("error") => match client::answer_rid(b) {
                    Some(rid) => Frame::Answer {
                        rid,
                        committed: false,
                    },
                    None => Frame::Other,
                },
                _ => Frame::Other,
            },
            (Proto::Socketio, Message::Text(t)) => socketio_frame(t),
            _ => Frame::Other,
        }
    }
}

/// Bytes of an event beside its padding text (id, table, record, user,
/// version, field names), so `--event-bytes` is about the event's size.
const EVENT_OVERHEAD: usize = 220;

/// `len` bytes of text that differs from change to change, with the word
/// repetition of real prose (so it compresses as a typed cell would, not
/// as one repeated byte).
fn prose(seed: u64, len: usize) -> String {
    const WORDS: [&str; 32] = [
        "the",
        "customer",
        "asked",
        "about",
        "delivery",
        "of",
        "order",
        "next",
        "week",
        "and",
        "whether",
        "invoice",
        "was",
        "sent",
        "to",
        "accounting",
        "team",
        "before",
        "review",
        "meeting",
        "on",
        "Tuesday",
        "please",
        "check",
        "status",
        "with",
        "warehouse",
        "supplier",
        "contract",
        "renewal",
        "notes",
        "follow-up",
    ];
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.push_str(WORDS[(state >> 59) as usize]);
        out.push(if (state >> 20).is_multiple_of(11) {
            '.'
        } else {
            ' '
        });
    }
    out.truncate(len);
    out
}

/// Engine.IO packet types: 2 ping (answered 3), 4 message; Socket.IO packet
/// types inside a message: 2 event (`42["name",data]`), 3 ack (`43<id>[data]`).
fn socketio_frame(t: &str) -> Frame {
    if t == "2" {
        return Frame::Reply(Message::Text("3".into()));
    }
    if let Some(rest) = t.strip_prefix("42") {
        // Parsed straight into the events (no JSON tree first): the
        // generator shares the cores with the servers it measures.
        let body = |name: &str| {
            rest.strip_prefix("[\"")
                .and_then(|r| r.strip_prefix(name))
                .and_then(|r| r.strip_prefix("\","))
                .and_then(|r| r.strip_suffix(']'))
        };
        if let Some(one) = body("record_change") {
            return Frame::Events(serde_json::from_str(one).into_iter().collect());
        }
        if let Some(list) = body("batch_changes") {
            return Frame::Events(serde_json::from_str(list).unwrap_or_default());
        }
        return Frame::Other;
    }
    if let Some(rest) = t.strip_prefix("43") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(rid) = rest[..digits].parse() else {
            return Frame::Other;
        };
        let committed = !rest[digits..].contains("\"error\"");
        return Frame::Answer { rid, committed };
    }
    Frame::Other
}

async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
            .await
            .context("timed out waiting for the server")?
            .context("connection closed")??;
        if let Message::Text(t) = msg {
            return Ok(t.to_string());
        }
    }
}
