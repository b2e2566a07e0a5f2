//! Engine.IO v4 packets (the transport under Socket.IO): one packet per
//! WebSocket message, or several per long-polling body separated by `\x1e`
//! (binary ones as `b` + base64 there).
//!
//! ```text
//! 0 open {sid, upgrades, pingInterval, pingTimeout, maxPayload}
//! 1 close   2 ping   3 pong   4 message <data>   5 upgrade   6 noop
//! ```

use bytes::Bytes;
use serde::Serialize;

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Open(String),
    Close,
    Ping(String),
    Pong(String),
    /// A text message (its Socket.IO packet, for the default parser).
    Message(String),
    /// A binary message (an attachment, or a msgpack-parser packet).
    Binary(Bytes),
    Upgrade,
    Noop,
}

/// Why a message is not an Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an Engine.IO packet: {0}")]
pub struct BadPacket(pub &'static str);

/// The `open` packet's handshake.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    pub sid: String,
    pub upgrades: Vec<&'static str>,
    pub ping_interval: u64,
    pub ping_timeout: u64,
    pub max_payload: usize,
}

impl Handshake {
    /// The `open` packet carrying it.
    pub fn packet(&self) -> Packet {
        Packet::Open(serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned()))
    }
}

impl Packet {
    /// Decodes a WebSocket text message.
    pub fn from_text(text: &str) -> Result<Packet, BadPacket> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(BadPacket("empty"))?;
        let rest = chars.as_str();
        Ok(match kind {
            '0' => Packet::Open(rest.to_owned()),
            '1' => Packet::Close,
            '2' => Packet::Ping(rest.to_owned()),
            '3' => Packet::Pong(rest.to_owned()),
            '4' => Packet::Message(rest.to_owned()),
            '5' => Packet::Upgrade,
            '6' => Packet::Noop,
            _ => return Err(BadPacket("unknown packet type")),
        })
    }

    /// Its WebSocket text form; `None` for a binary packet (sent as is).
    pub fn to_text(&self) -> Option<String> {
        Some(match self {
            Packet::Open(h) => format!("0{h}"),
            Packet::Close => "1".to_owned(),
            Packet::Ping(p) => format!("2{p}"),
            Packet::Pong(p) => format!("3{p}"),
            Packet::Message(m) => format!("4{m}"),
            Packet::Binary(_) => return None,
            Packet::Upgrade => "5".to_owned(),
            Packet::Noop => "6".to_owned(),
        })
    }

    /// One packet of a long-polling body: text as on a WebSocket, binary
    /// as `b` + base64.
    pub fn to_polling(&self) -> String {
        match self {
            Packet::Binary(b) => {
                use base64::Engine as _;
                format!("b{}", base64::engine::general_purpose::STANDARD.encode(b))
            }
            p => p.to_text().unwrap_or_default(),
        }
    }

    /// One packet of a long-polling body.
    pub fn from_polling(part: &str) -> Result<Packet, BadPacket> {
        match part.strip_prefix('b') {
            Some(b64) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map(|b| Packet::Binary(Bytes::from(b)))
                    .map_err(|_| BadPacket("bad base64"))
            }
            None => Packet::from_text(part),
        }
    }
}

/// The separator of packets in a long-polling body.
pub const SEPARATOR: char = '\u{1e}';

/// A long-polling body's packets, decoded one at a time as they are taken:
/// a body of many tiny packets never becomes a list of them (a 1 MiB body
/// of `6`s would be half a million packets, tens of MB).
pub fn payload_packets(body: &str) -> impl Iterator<Item = Result<Packet, BadPacket>> + '_ {
    body.split(SEPARATOR).map(Packet::from_polling)
}

/// Joins packets into one long-polling body.
pub fn encode_payload<'a>(packets: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, p) in packets.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        out.push_str(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_packets_round_trip() {
        for text in ["0{\"sid\":\"x\"}", "1", "2", "3probe", "4hello", "5", "6"] {
            let p = Packet::from_text(text).unwrap();
            assert_eq!(p.to_text().as_deref(), Some(text));
        }
        assert!(Packet::from_text("").is_err());
        assert!(Packet::from_text("9").is_err());
    }

    #[test]
    fn polling_bodies_split_on_the_record_separator_with_base64_binary() {
        let body = "4hello\u{1e}bAQID\u{1e}2";
        let packets: Vec<Packet> = payload_packets(body).map(Result::unwrap).collect();
        assert_eq!(
            packets,
            vec![
                Packet::Message("hello".into()),
                Packet::Binary(Bytes::from_static(&[1, 2, 3])),
                Packet::Ping(String::new()),
            ]
        );
        let parts: Vec<String> = packets.iter().map(Packet::to_polling).collect();
        assert_eq!(encode_payload(parts.iter().map(String::as_str)), body);
        assert!(payload_packets("4a\u{1e}b!!").any(|p| p.is_err()));
    }

    #[test]
    fn the_handshake_has_the_names_clients_read() {
        let h = Handshake {
            sid: "s".into(),
            upgrades: vec!["websocket"],
            ping_interval: 25000,
            ping_timeout: 20000,
            max_payload: 1000,
        };
        assert_eq!(
            h.packet().to_text().unwrap(),
            r#"0{"sid":"s","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000}"#
        );
    }
}
