//! How one connection's frames look on the wire, behind one small trait, so
//! the session and the hub know nothing of it: a [`Framing`] decodes a
//! client message into a [`ClientFrame`] (its [`ClientEvent`] parsed once)
//! and encodes server frames. `/ws` with MessagePack and with JSON
//! ([`WsFraming`], docs/protocol.md section 1) are the two framings today.
//!
//! A change event's own bytes are encoded once per [`Encoding`] (the value
//! encoding its frames carry) and shared; a framing only wraps them. The
//! hub builds each frame once per framing [`Framing::slot`] and shares it
//! across that framing's subscribers.

use bytes::Bytes;
use serde_json::Value;

use super::codec::{decode_frame, encode_frame, salvage_rid, Encoding};
use super::event::{list_frame, single_frame};
use super::messages::ClientEvent;
use super::server_event::ServerEvent;
use super::RequestError;
use crate::change::ChangeEvent;

/// How many framings a frame cache holds slots for.
pub const SLOTS: usize = 4;

/// A client message, decoded.
#[derive(Debug)]
pub struct ClientFrame {
    /// The event it names; its name when it names none we know.
    pub event: Result<ClientEvent, String>,
    pub data: Value,
    pub rid: Option<u64>,
}

/// A decoded client message: a request, or a control packet of the
/// framing's own (Socket.IO's pings and namespace connects).
#[derive(Debug)]
pub enum Inbound {
    Frame(ClientFrame),
    Control(Control),
    /// A request whose binary attachments follow, one message each
    /// (Socket.IO's `BINARY_EVENT`; see `session::attachments`).
    Partial {
        frame: ClientFrame,
        attachments: usize,
    },
}

/// What a framing tells the session besides requests.
#[derive(Debug, PartialEq)]
pub enum Control {
    /// The client answered a ping.
    Pong,
    /// The client pings; answered with [`Framing::pong`].
    Ping(String),
    /// The client joins a namespace, with its `auth` payload; `binary`:
    /// the packet came in binary form.
    Connect {
        nsp: String,
        auth: Option<Value>,
        binary: bool,
    },
    /// The client leaves its Socket.IO socket (`41`): the connection
    /// stays open, without identity, subscriptions or presence.
    Disconnect,
    /// The client closes the connection (Engine.IO's `1`).
    Close,
    /// Nothing to do (a no-op, a packet for no one here).
    Ignore,
}

/// The liveness settings a framing announces (Socket.IO's handshake).
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    pub max_payload: usize,
    /// The connection may upgrade (long-polling to WebSocket).
    pub upgrades: bool,
}

/// A client message that could not be decoded, with its `rid` if one could
/// still be read (so the error can be correlated).
#[derive(Debug)]
pub struct BadFrame {
    pub error: RequestError,
    pub rid: Option<u64>,
}

/// One wire framing (see the module doc).
pub trait Framing: Send + Sync + 'static {
    /// Its index in frame caches: `0..SLOTS`, distinct per framing.
    fn slot(&self) -> usize;
    /// The encoding of the values its frames carry.
    fn encoding(&self) -> Encoding;
    /// Whether its frames go as binary WebSocket messages (else text).
    fn binary(&self) -> bool;
    /// Decodes one client message (`text`: it came as a text message).
    fn decode(&self, message: &[u8], text: bool) -> Result<Inbound, BadFrame>;
    /// A frame of `event` with `data`; a reply carries its request's `rid`.
    fn frame(&self, event: ServerEvent, data: &Value, rid: Option<u64>) -> Bytes;
    /// A frame of one change event (`record_change`).
    fn event_frame(&self, event: ServerEvent, change: &ChangeEvent) -> Bytes;
    /// A frame of several, in order (`batch_changes`, `recent_changes`,
    /// `missed_events`).
    fn events_frame(&self, event: ServerEvent, changes: &[&ChangeEvent]) -> Bytes;

    /// The connection's first frame (Engine.IO's `open`), if it has one.
    fn opening(&self, _sid: &str, _heartbeat: &Heartbeat) -> Option<Bytes> {
        None
    }
    /// A ping of the framing's own; `None`: WebSocket pings.
    fn ping(&self) -> Option<Bytes> {
        None
    }
    /// The answer to a [`Control::Ping`].
    fn pong(&self, _payload: &str) -> Option<Bytes> {
        None
    }
    /// The answer to a [`Control::Connect`] that was accepted.
    fn connected(&self, _nsp: &str, _sid: &str) -> Option<Bytes> {
        None
    }
    /// The framing to switch to when a client's CONNECT comes in binary
    /// form (Socket.IO's msgpack parser), if the framing has one.
    fn binary_parser(&self) -> Option<&'static dyn Framing> {
        None
    }
    /// The answer to a [`Control::Connect`] that was refused.
    fn connect_error(&self, _nsp: &str, _message: &str, _code: Option<&str>) -> Option<Bytes> {
        None
    }
}

/// `/ws`: `[event, data, rid?]` as one MessagePack (binary) or JSON (text)
/// message.
pub struct WsFraming(Encoding);

pub static WS_MSGPACK: WsFraming = WsFraming(Encoding::MsgPack);
pub static WS_JSON: WsFraming = WsFraming(Encoding::Json);

impl WsFraming {
    /// The `/ws` framing of a negotiated encoding.
    pub fn of(encoding: Encoding) -> &'static dyn Framing {
        match encoding {
            Encoding::MsgPack => &WS_MSGPACK,
            Encoding::Json => &WS_JSON,
        }
    }
}

impl Framing for WsFraming {
    fn slot(&self) -> usize {
        self.0.index()
    }

    fn encoding(&self) -> Encoding {
        self.0
    }

    fn binary(&self) -> bool {
        self.0 == Encoding::MsgPack
    }

    fn decode(&self, message: &[u8], text: bool) -> Result<Inbound, BadFrame> {
        match decode_frame(message, text) {
            Ok(f) => Ok(Inbound::Frame(ClientFrame {
                event: ClientEvent::parse(&f.event).ok_or(f.event),
                data: f.data,
                rid: f.rid,
            })),
            Err(error) => Err(BadFrame {
                error,
                rid: salvage_rid(message, text),
            }),
        }
    }

    fn frame(&self, event: ServerEvent, data: &Value, rid: Option<u64>) -> Bytes {
        encode_frame(self.0, event.name(), data, rid)
    }

    fn event_frame(&self, event: ServerEvent, change: &ChangeEvent) -> Bytes {
        single_frame(event.name(), change, self.0)
    }

    fn events_frame(&self, event: ServerEvent, changes: &[&ChangeEvent]) -> Bytes {
        list_frame(event.name(), changes.iter().copied(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_framing_has_its_own_slot() {
        let socketio = &crate::socketio::framing::SOCKETIO_JSON;
        let slots = [WS_MSGPACK.slot(), WS_JSON.slot(), socketio.slot()];
        assert!(slots.iter().all(|s| *s < SLOTS));
        assert!(slots[0] != slots[1] && slots[1] != slots[2] && slots[0] != slots[2]);
    }

    fn frame(inbound: Inbound) -> ClientFrame {
        match inbound {
            Inbound::Frame(f) => f,
            Inbound::Control(c) => panic!("a control packet: {c:?}"),
            Inbound::Partial { .. } => panic!("a packet with attachments"),
        }
    }

    #[test]
    fn decodes_the_event_once_and_keeps_an_unknown_name() {
        let f = frame(
            WS_JSON
                .decode(br#"["heartbeat",{"tableId":"t"},4]"#, true)
                .unwrap(),
        );
        assert_eq!(f.event, Ok(ClientEvent::Heartbeat));
        assert_eq!(f.rid, Some(4));
        let f = frame(WS_JSON.decode(br#"["nope",null]"#, true).unwrap());
        assert_eq!(f.event, Err("nope".to_owned()));
        let bad = WS_JSON.decode(br#"[1,null,7]"#, true).unwrap_err();
        assert_eq!(bad.rid, Some(7));
    }
}
