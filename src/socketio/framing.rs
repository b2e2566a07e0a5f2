//! rtsync's session over Socket.IO (docs/protocol.md section 10): the
//! [`Framing`] of a `/socket.io/` connection with the default (JSON)
//! parser. A client's `EVENT` is the `/ws` frame of the same name, its ack
//! id the `rid`; the server's events are `EVENT`s of the same name, and a
//! request's answer goes to the client's callback as an `ACK`. Change
//! events keep their one JSON encoding, shared with `/ws` JSON clients:
//! a frame only wraps those bytes (`42["record_change",` … `]`).
//!
//! Engine.IO and Socket.IO control packets (pings, CONNECT, DISCONNECT)
//! come out of [`Framing::decode`] as [`Control`]s for the session.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

use super::engine::Packet as EnginePacket;
use super::packet::{Kind, Packet};
use crate::change::ChangeEvent;
use crate::protocol::codec::Encoding;
use crate::protocol::framing::{BadFrame, ClientFrame, Control, Framing, Inbound};
use crate::protocol::messages::ClientEvent;
use crate::protocol::{RequestError, ServerEvent};

/// Socket.IO with the default parser, over a WebSocket.
pub struct SocketIoJson;

pub static SOCKETIO_JSON: SocketIoJson = SocketIoJson;

/// `42[` + the event's name as JSON + `,`: the head of every event frame.
fn event_head(out: &mut BytesMut, name: &str) {
    out.extend_from_slice(b"42[");
    let _ = serde_json::to_writer(out.writer(), name);
    out.put_u8(b',');
}

fn bad(message: String) -> BadFrame {
    BadFrame {
        error: RequestError::bad_request(message),
        rid: None,
    }
}

impl Framing for SocketIoJson {
    fn slot(&self) -> usize {
        2
    }

    fn encoding(&self) -> Encoding {
        Encoding::Json
    }

    fn binary(&self) -> bool {
        false
    }

    fn decode(&self, message: &[u8], text: bool) -> Result<Inbound, BadFrame> {
        if !text {
            // Binary attachments (and the msgpack parser) are not taken:
            // every rtsync payload is JSON.
            return Err(bad("binary Socket.IO packets are not accepted".into()));
        }
        let text = std::str::from_utf8(message).map_err(|_| bad("not UTF-8".into()))?;
        let engine = EnginePacket::from_text(text).map_err(|e| bad(e.to_string()))?;
        let body = match engine {
            EnginePacket::Message(body) => body,
            EnginePacket::Pong(_) => return Ok(Inbound::Control(Control::Pong)),
            EnginePacket::Ping(p) => return Ok(Inbound::Control(Control::Ping(p))),
            EnginePacket::Close => return Ok(Inbound::Control(Control::Disconnect)),
            _ => return Ok(Inbound::Control(Control::Ignore)),
        };
        let packet = Packet::decode(&body).map_err(|e| bad(e.to_string()))?;
        match packet.kind {
            Kind::Connect => Ok(Inbound::Control(Control::Connect {
                nsp: packet.nsp,
                auth: packet.data,
            })),
            Kind::Disconnect => Ok(Inbound::Control(Control::Disconnect)),
            Kind::Event if packet.nsp == "/" => {
                let mut args = match packet.data {
                    Some(Value::Array(args)) => args.into_iter(),
                    _ => Vec::new().into_iter(),
                };
                let name = match args.next() {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                Ok(Inbound::Frame(ClientFrame {
                    event: ClientEvent::parse(&name).ok_or(name),
                    data: args.next().unwrap_or(Value::Null),
                    rid: packet.id,
                }))
            }
            // Acks from the client (the server asks for none), packets of
            // other namespaces, binary packets: not for rtsync.
            _ => Ok(Inbound::Control(Control::Ignore)),
        }
    }

    fn frame(&self, event: ServerEvent, data: &Value, rid: Option<u64>) -> Bytes {
        let packet = match (event, rid) {
            (ServerEvent::Ack, Some(id)) => {
                Packet::new(Kind::Ack, "/", Some(id), Some(json!([data])))
            }
            // A failed request with a callback: the callback gets {error}.
            (ServerEvent::Error, Some(id)) => {
                Packet::new(Kind::Ack, "/", Some(id), Some(json!([{ "error": data }])))
            }
            _ => Packet::new(Kind::Event, "/", None, Some(json!([event.name(), data]))),
        };
        Bytes::from(format!("4{}", packet.encode()))
    }

    fn event_frame(&self, event: ServerEvent, change: &ChangeEvent) -> Bytes {
        let body = change.encoded(Encoding::Json);
        let mut out = BytesMut::with_capacity(body.len() + 32);
        event_head(&mut out, event.name());
        out.extend_from_slice(body);
        out.put_u8(b']');
        out.freeze()
    }

    fn events_frame(&self, event: ServerEvent, changes: &[&ChangeEvent]) -> Bytes {
        let len: usize = changes
            .iter()
            .map(|c| c.encoded(Encoding::Json).len() + 1)
            .sum();
        let mut out = BytesMut::with_capacity(len + 32);
        event_head(&mut out, event.name());
        out.put_u8(b'[');
        for (i, c) in changes.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            out.extend_from_slice(c.encoded(Encoding::Json));
        }
        out.extend_from_slice(b"]]");
        out.freeze()
    }

    fn opening(&self, sid: &str, handshake: &crate::protocol::framing::Heartbeat) -> Option<Bytes> {
        let open = super::engine::Handshake {
            sid: sid.to_owned(),
            upgrades: if handshake.upgrades {
                vec!["websocket"]
            } else {
                Vec::new()
            },
            ping_interval: handshake.interval.as_millis() as u64,
            ping_timeout: handshake.timeout.as_millis() as u64,
            max_payload: handshake.max_payload,
        };
        open.packet().to_text().map(Bytes::from)
    }

    fn ping(&self) -> Option<Bytes> {
        Some(Bytes::from_static(b"2"))
    }

    fn pong(&self, payload: &str) -> Option<Bytes> {
        Some(Bytes::from(format!("3{payload}")))
    }

    fn connected(&self, nsp: &str, sid: &str) -> Option<Bytes> {
        let p = Packet::new(Kind::Connect, nsp, None, Some(json!({ "sid": sid })));
        Some(Bytes::from(format!("4{}", p.encode())))
    }

    fn connect_error(&self, nsp: &str, message: &str, code: Option<&str>) -> Option<Bytes> {
        let data = match code {
            Some(code) => json!({"message": message, "data": {"code": code}}),
            None => json!({ "message": message }),
        };
        let p = Packet::new(Kind::ConnectError, nsp, None, Some(data));
        Some(Bytes::from(format!("4{}", p.encode())))
    }
}
