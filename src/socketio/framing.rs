//! rtsync's session over Socket.IO (docs/protocol.md section 10): the
//! [`Framing`] of a `/socket.io/` connection with the default (JSON)
//! parser. A client's `EVENT` is the `/ws` frame of the same name, its ack
//! id the `rid`; the server's events are `EVENT`s of the same name, and a
//! request's answer goes to the client's callback as an `ACK`. Change
//! events keep their one JSON encoding, shared with `/ws` JSON clients:
//! a frame only wraps those bytes (`42["record_change",` … `]`).
//!
//! Engine.IO and Socket.IO control packets (pings, CONNECT, DISCONNECT)
//! come out of [`Framing::decode`] as [`Control`]s for the session. A
//! client whose CONNECT comes as a binary message uses
//! `socket.io-msgpack-parser`: the session switches it to
//! [`SocketIoMsgpack`] (recognised per connection).

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

use super::engine::Packet as EnginePacket;
use super::packet::{Kind, Packet};
use crate::change::ChangeEvent;
use crate::protocol::codec::Encoding;
use crate::protocol::framing::{BadFrame, ClientFrame, Control, Framing, Heartbeat, Inbound};
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
        decode(message, text)
    }

    fn binary_parser(&self) -> Option<&'static dyn Framing> {
        Some(&SOCKETIO_MSGPACK)
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

    fn opening(&self, sid: &str, handshake: &Heartbeat) -> Option<Bytes> {
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

/// A client message of either parser: Engine.IO text packets (pings, and
/// the default parser's Socket.IO packets in `4…` messages), or a binary
/// message holding one msgpack parser packet.
fn decode(message: &[u8], text: bool) -> Result<Inbound, BadFrame> {
    let packet = if text {
        let text = std::str::from_utf8(message).map_err(|_| bad("not UTF-8".into()))?;
        let engine = EnginePacket::from_text(text).map_err(|e| bad(e.to_string()))?;
        let body = match engine {
            EnginePacket::Message(body) => body,
            EnginePacket::Pong(_) => return Ok(Inbound::Control(Control::Pong)),
            EnginePacket::Ping(p) => return Ok(Inbound::Control(Control::Ping(p))),
            EnginePacket::Close => return Ok(Inbound::Control(Control::Close)),
            _ => return Ok(Inbound::Control(Control::Ignore)),
        };
        Packet::decode(&body).map_err(|e| bad(e.to_string()))?
    } else {
        let value = crate::change::value::msgpack_value(message)
            .map_err(|e| bad(format!("not a msgpack parser packet: {e}")))?;
        Packet::from_msgpack(value).map_err(|e| bad(e.to_string()))?
    };
    match packet.kind {
        Kind::Connect => Ok(Inbound::Control(Control::Connect {
            nsp: packet.nsp,
            auth: packet.data,
            binary: !text,
        })),
        Kind::Disconnect => Ok(Inbound::Control(Control::Disconnect)),
        Kind::Event | Kind::BinaryEvent if packet.nsp == "/" => {
            let mut args = match packet.data {
                Some(Value::Array(args)) => args.into_iter(),
                _ => Vec::new().into_iter(),
            };
            let name = match args.next() {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let frame = ClientFrame {
                event: ClientEvent::parse(&name).ok_or(name),
                data: args.next().unwrap_or(Value::Null),
                rid: packet.id,
            };
            Ok(match packet.attachments {
                0 => Inbound::Frame(frame),
                n => Inbound::Partial {
                    frame,
                    attachments: n,
                },
            })
        }
        // Acks from the client (the server asks for none), packets of
        // other namespaces: not for rtsync.
        _ => Ok(Inbound::Control(Control::Ignore)),
    }
}

/// Socket.IO with `socket.io-msgpack-parser`: every Socket.IO packet is
/// one binary message, a msgpack map `{type, nsp, id?, data}`; Engine.IO's
/// own packets stay text. Change events keep their one MessagePack
/// encoding (shared with `/ws` MessagePack clients), spliced into the map.
pub struct SocketIoMsgpack;

pub static SOCKETIO_MSGPACK: SocketIoMsgpack = SocketIoMsgpack;

/// `{"type": 2, "nsp": "/", "data": [` + the name: the head of an event
/// packet; the data array's second item follows.
fn msgpack_event_head(out: &mut BytesMut, name: &str) {
    out.put_u8(0x83);
    let mut w = out.writer();
    let _ = rmp::encode::write_str(&mut w, "type");
    let _ = rmp::encode::write_uint(&mut w, 2);
    let _ = rmp::encode::write_str(&mut w, "nsp");
    let _ = rmp::encode::write_str(&mut w, "/");
    let _ = rmp::encode::write_str(&mut w, "data");
    let _ = rmp::encode::write_array_len(&mut w, 2);
    let _ = rmp::encode::write_str(&mut w, name);
}

fn msgpack(value: &Value) -> Bytes {
    Bytes::from(rmp_serde::to_vec_named(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "failed to encode a Socket.IO packet");
        vec![0xc0]
    }))
}

impl Framing for SocketIoMsgpack {
    fn slot(&self) -> usize {
        3
    }

    fn encoding(&self) -> Encoding {
        Encoding::MsgPack
    }

    fn binary(&self) -> bool {
        true
    }

    fn decode(&self, message: &[u8], text: bool) -> Result<Inbound, BadFrame> {
        decode(message, text)
    }

    fn frame(&self, event: ServerEvent, data: &Value, rid: Option<u64>) -> Bytes {
        msgpack(&match (event, rid) {
            (ServerEvent::Ack, Some(id)) => {
                json!({"type": 3, "nsp": "/", "id": id, "data": [data]})
            }
            (ServerEvent::Error, Some(id)) => {
                json!({"type": 3, "nsp": "/", "id": id, "data": [{ "error": data }]})
            }
            _ => json!({"type": 2, "nsp": "/", "data": [event.name(), data]}),
        })
    }

    fn event_frame(&self, event: ServerEvent, change: &ChangeEvent) -> Bytes {
        let body = change.encoded(Encoding::MsgPack);
        let mut out = BytesMut::with_capacity(body.len() + 48);
        msgpack_event_head(&mut out, event.name());
        out.extend_from_slice(body);
        out.freeze()
    }

    fn events_frame(&self, event: ServerEvent, changes: &[&ChangeEvent]) -> Bytes {
        let len: usize = changes
            .iter()
            .map(|c| c.encoded(Encoding::MsgPack).len())
            .sum();
        let mut out = BytesMut::with_capacity(len + 48);
        msgpack_event_head(&mut out, event.name());
        let _ = rmp::encode::write_array_len(&mut (&mut out).writer(), changes.len() as u32);
        for c in changes {
            out.extend_from_slice(c.encoded(Encoding::MsgPack));
        }
        out.freeze()
    }

    fn opening(&self, sid: &str, handshake: &Heartbeat) -> Option<Bytes> {
        SOCKETIO_JSON.opening(sid, handshake)
    }

    fn ping(&self) -> Option<Bytes> {
        SOCKETIO_JSON.ping()
    }

    fn pong(&self, payload: &str) -> Option<Bytes> {
        SOCKETIO_JSON.pong(payload)
    }

    fn connected(&self, nsp: &str, sid: &str) -> Option<Bytes> {
        Some(msgpack(
            &json!({"type": 0, "nsp": nsp, "data": {"sid": sid}}),
        ))
    }

    fn connect_error(&self, nsp: &str, message: &str, code: Option<&str>) -> Option<Bytes> {
        let data = match code {
            Some(code) => json!({"message": message, "data": {"code": code}}),
            None => json!({ "message": message }),
        };
        Some(msgpack(&json!({"type": 4, "nsp": nsp, "data": data})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::event::fixtures::{entry, id};

    fn event() -> ChangeEvent {
        let f = entry(&[
            ("type", b"update"),
            ("entityType", b"record"),
            ("entityId", b"r1"),
            ("userId", b"u1"),
            ("changes", br#"[{"fieldId":"f","newValue":1.5}]"#),
        ]);
        ChangeEvent::from_entry(id("5-1"), &f, Some("t")).unwrap()
    }

    #[test]
    fn a_default_parser_event_wraps_the_events_json_bytes() {
        let e = event();
        let frame = SOCKETIO_JSON.event_frame(ServerEvent::RecordChange, &e);
        let text = std::str::from_utf8(&frame).unwrap();
        let (name, data): (String, Value) = serde_json::from_str(&text[2..]).unwrap();
        assert!(text.starts_with("42"));
        assert_eq!(name, "record_change");
        assert_eq!(data["id"], "5-1");
        let list = SOCKETIO_JSON.events_frame(ServerEvent::BatchChanges, &[&e, &e]);
        let (_, data): (String, Value) = serde_json::from_slice(&list[2..]).unwrap();
        assert_eq!(data.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_msgpack_parser_event_is_one_map_around_the_events_msgpack_bytes() {
        let e = event();
        let frame = SOCKETIO_MSGPACK.event_frame(ServerEvent::RecordChange, &e);
        let v: Value = rmp_serde::from_slice(&frame).unwrap();
        assert_eq!(v["type"], 2);
        assert_eq!(v["nsp"], "/");
        assert_eq!(v["data"][0], "record_change");
        assert_eq!(v["data"][1]["changes"][0]["newValue"], 1.5);
        let list = SOCKETIO_MSGPACK.events_frame(ServerEvent::BatchChanges, &[&e, &e]);
        let v: Value = rmp_serde::from_slice(&list).unwrap();
        assert_eq!(v["data"][1].as_array().map(Vec::len), Some(2));
        let ack = SOCKETIO_MSGPACK.frame(ServerEvent::Ack, &json!({"ok": 1}), Some(7));
        let v: Value = rmp_serde::from_slice(&ack).unwrap();
        assert_eq!(
            v,
            json!({"type": 3, "nsp": "/", "id": 7, "data": [{"ok": 1}]})
        );
    }

    #[test]
    fn a_binary_connect_names_the_msgpack_parser() {
        let connect =
            rmp_serde::to_vec_named(&json!({"type": 0, "nsp": "/", "data": {"token": "t"}}))
                .unwrap();
        match SOCKETIO_JSON.decode(&connect, false).unwrap() {
            Inbound::Control(Control::Connect { nsp, auth, binary }) => {
                assert_eq!(nsp, "/");
                assert_eq!(auth, Some(json!({"token": "t"})));
                assert!(binary);
            }
            other => panic!("{other:?}"),
        }
        assert!(SOCKETIO_JSON.binary_parser().is_some());
        let event = rmp_serde::to_vec_named(
            &json!({"type": 2, "nsp": "/", "id": 3, "data": ["heartbeat", {"tableId": "t"}]}),
        )
        .unwrap();
        match SOCKETIO_MSGPACK.decode(&event, false).unwrap() {
            Inbound::Frame(f) => {
                assert_eq!(f.event, Ok(ClientEvent::Heartbeat));
                assert_eq!(f.rid, Some(3));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            json!([1]),
            json!({"type": 9}),
            json!({"type": 2, "data": {}}),
            json!({"type": 5, "data": ["x"]}),
        ] {
            let bytes = rmp_serde::to_vec_named(&bad).unwrap();
            assert!(SOCKETIO_MSGPACK.decode(&bytes, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn failed_requests_with_a_callback_get_an_error_argument() {
        let f = SOCKETIO_JSON.frame(ServerEvent::Error, &json!({"code": "forbidden"}), Some(4));
        assert_eq!(&f[..], br#"434[{"error":{"code":"forbidden"}}]"#);
        let f = SOCKETIO_JSON.frame(ServerEvent::Error, &json!({"code": "forbidden"}), None);
        assert_eq!(&f[..], br#"42["error",{"code":"forbidden"}]"#);
    }
}
