//! Socket.IO v5 packets, as the default parser writes them in an
//! Engine.IO message:
//!
//! ```text
//! <type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]
//! 0 CONNECT  1 DISCONNECT  2 EVENT  3 ACK  4 CONNECT_ERROR
//! 5 BINARY_EVENT  6 BINARY_ACK
//! ```
//!
//! e.g. `42["record_change",{...}]`, `2/admin,7["x"]`, `40{"token":"…"}`.

use serde_json::Value;

/// A packet's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl Kind {
    fn of(c: u8) -> Option<Kind> {
        Some(match c {
            b'0' => Kind::Connect,
            b'1' => Kind::Disconnect,
            b'2' => Kind::Event,
            b'3' => Kind::Ack,
            b'4' => Kind::ConnectError,
            b'5' => Kind::BinaryEvent,
            b'6' => Kind::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        match self {
            Kind::Connect => '0',
            Kind::Disconnect => '1',
            Kind::Event => '2',
            Kind::Ack => '3',
            Kind::ConnectError => '4',
            Kind::BinaryEvent => '5',
            Kind::BinaryAck => '6',
        }
    }
}

/// One Socket.IO packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: Kind,
    /// `/` for the main namespace.
    pub nsp: String,
    pub id: Option<u64>,
    pub data: Option<Value>,
    /// Binary attachments that follow (binary kinds only).
    pub attachments: usize,
}

/// Why a message is not a Socket.IO packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Socket.IO packet: {0}")]
pub struct BadPacket(pub &'static str);

/// Most attachments one packet may announce.
pub const MAX_ATTACHMENTS: usize = 10;

impl Packet {
    pub fn new(kind: Kind, nsp: &str, id: Option<u64>, data: Option<Value>) -> Packet {
        Packet {
            kind,
            nsp: nsp.to_owned(),
            id,
            data,
            attachments: 0,
        }
    }

    /// Decodes the default parser's text form.
    pub fn decode(text: &str) -> Result<Packet, BadPacket> {
        let bytes = text.as_bytes();
        let kind = bytes
            .first()
            .copied()
            .and_then(Kind::of)
            .ok_or(BadPacket("unknown packet type"))?;
        let mut at = 1;
        let mut attachments = 0;
        if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
            let dash = text[at..]
                .find('-')
                .ok_or(BadPacket("attachments without '-'"))?;
            attachments = text[at..at + dash]
                .parse::<usize>()
                .map_err(|_| BadPacket("bad attachment count"))?;
            if attachments > MAX_ATTACHMENTS {
                return Err(BadPacket("too many attachments"));
            }
            at += dash + 1;
        }
        let mut nsp = "/".to_owned();
        if bytes.get(at) == Some(&b'/') {
            let end = text[at..].find(',').map_or(text.len(), |i| at + i);
            nsp = text[at..end].to_owned();
            at = (end + 1).min(text.len());
        }
        let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
        let id = if digits > 0 {
            if digits > 15 {
                return Err(BadPacket("ack id too long"));
            }
            let id = text[at..at + digits]
                .parse::<u64>()
                .map_err(|_| BadPacket("bad ack id"))?;
            at += digits;
            Some(id)
        } else {
            None
        };
        let rest = &text[at..];
        let data = if rest.is_empty() {
            None
        } else {
            Some(serde_json::from_str(rest).map_err(|_| BadPacket("bad JSON payload"))?)
        };
        let packet = Packet {
            kind,
            nsp,
            id,
            data,
            attachments,
        };
        packet.check()?;
        Ok(packet)
    }

    /// A `socket.io-msgpack-parser` packet: a map `{type, nsp, id?, data}`.
    pub fn from_msgpack(value: Value) -> Result<Packet, BadPacket> {
        let Value::Object(mut map) = value else {
            return Err(BadPacket("a msgpack packet is a map"));
        };
        let kind = map
            .get("type")
            .and_then(Value::as_u64)
            .and_then(|t| u8::try_from(t).ok())
            .and_then(|t| Kind::of(b'0' + t.min(9)))
            .ok_or(BadPacket("unknown packet type"))?;
        if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
            return Err(BadPacket("binary packet types are not used by this parser"));
        }
        let nsp = match map.remove("nsp") {
            Some(Value::String(s)) if s.starts_with('/') => s,
            None => "/".to_owned(),
            _ => return Err(BadPacket("bad namespace")),
        };
        let id = match map.remove("id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or(BadPacket("bad ack id"))?),
        };
        // `data: null` (or notepack's `undefined`) is no data: a CONNECT
        // without `auth`, as socket.io-client sends it.
        let data = map.remove("data").filter(|d| !d.is_null());
        let packet = Packet {
            kind,
            nsp,
            id,
            data,
            attachments: 0,
        };
        packet.check()?;
        Ok(packet)
    }

    /// The shapes each type must have (socket.io-parser's rules).
    fn check(&self) -> Result<(), BadPacket> {
        match (self.kind, &self.data) {
            (Kind::Connect, None | Some(Value::Object(_))) => Ok(()),
            (Kind::Disconnect, None) => Ok(()),
            (Kind::ConnectError, Some(Value::Object(_) | Value::String(_))) => Ok(()),
            (Kind::Event | Kind::BinaryEvent, Some(Value::Array(a)))
                if a.first().is_some_and(|n| n.is_string() || n.is_number()) =>
            {
                Ok(())
            }
            (Kind::Ack | Kind::BinaryAck, Some(Value::Array(_))) if self.id.is_some() => Ok(()),
            _ => Err(BadPacket("payload of the wrong shape for its type")),
        }
    }

    /// The default parser's text form.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        out.push(self.kind.digit());
        if self.attachments > 0 {
            out.push_str(&format!("{}-", self.attachments));
        }
        if self.nsp != "/" {
            out.push_str(&self.nsp);
            out.push(',');
        }
        if let Some(id) = self.id {
            out.push_str(&id.to_string());
        }
        if let Some(data) = &self.data {
            out.push_str(&data.to_string());
        }
        out
    }
}

/// Whether `v` is a placeholder object, `{"_placeholder": true, ...}`.
fn is_placeholder(v: &serde_json::Map<String, Value>) -> bool {
    v.get("_placeholder") == Some(&Value::Bool(true))
}

/// Checks a binary packet's placeholders before any attachment is taken:
/// each names an attachment below `count` (its `num`), no two name the
/// same one, and every attachment is named. So filling them in costs
/// exactly the attachments' bytes once, never a multiple of them.
pub fn check_placeholders(data: &Value, count: usize) -> Result<(), BadPacket> {
    let mut named = vec![false; count];
    walk_placeholders(data, &mut named)?;
    if named.iter().all(|n| *n) {
        Ok(())
    } else {
        Err(BadPacket("an attachment no placeholder names"))
    }
}

fn walk_placeholders(data: &Value, named: &mut [bool]) -> Result<(), BadPacket> {
    match data {
        Value::Object(map) if is_placeholder(map) => {
            let slot = map
                .get("num")
                .and_then(Value::as_u64)
                .and_then(|n| named.get_mut(usize::try_from(n).ok()?))
                .ok_or(BadPacket("a placeholder names no attachment"))?;
            if std::mem::replace(slot, true) {
                return Err(BadPacket("two placeholders name one attachment"));
            }
            Ok(())
        }
        Value::Object(map) => map.values().try_for_each(|v| walk_placeholders(v, named)),
        Value::Array(items) => items.iter().try_for_each(|v| walk_placeholders(v, named)),
        _ => Ok(()),
    }
}

/// What filling one attachment in costs in memory per byte: each byte
/// becomes a JSON number (a `Value`), as JSON has no bytes.
pub const FILLED_BYTES_PER_BYTE: usize = std::mem::size_of::<Value>();

/// Replaces each `{"_placeholder": true, "num": n}` in `data` with
/// attachment `n` (as an array of byte values): what a binary packet means
/// once its attachments arrived. Each attachment is taken once (see
/// [`check_placeholders`], which must have passed); false when a
/// placeholder names none left.
pub fn fill_placeholders(data: &mut Value, attachments: &mut [Option<bytes::Bytes>]) -> bool {
    match data {
        Value::Object(map) if is_placeholder(map) => {
            let taken = map
                .get("num")
                .and_then(Value::as_u64)
                .and_then(|n| attachments.get_mut(usize::try_from(n).ok()?))
                .and_then(Option::take);
            let Some(b) = taken else {
                return false;
            };
            *data = Value::Array(b.iter().map(|&x| Value::from(x)).collect());
            true
        }
        Value::Object(map) => map.values_mut().all(|v| fill_placeholders(v, attachments)),
        Value::Array(items) => items.iter_mut().all(|v| fill_placeholders(v, attachments)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_acks_and_connects_round_trip() {
        for text in [
            "0",
            r#"0{"token":"t"}"#,
            "0/custom,",
            "1",
            r#"2["hello",1]"#,
            r#"212["hello",{"a":1}]"#,
            r#"2/custom,3["x"]"#,
            r#"37[{"status":"applied"}]"#,
            r#"4{"message":"no"}"#,
            r#"51-["up",{"_placeholder":true,"num":0}]"#,
            r#"61-4[{"_placeholder":true,"num":0}]"#,
        ] {
            let p = Packet::decode(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let again = p.encode();
            let expected = if text == "0/custom," {
                "0/custom,"
            } else {
                text
            };
            assert_eq!(again, expected);
        }
    }

    #[test]
    fn fields_are_read_in_order() {
        let p = Packet::decode(r#"2/admin,42["ev",{"x":1}]"#).unwrap();
        assert_eq!(p.kind, Kind::Event);
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.id, Some(42));
        assert_eq!(p.data, Some(json!(["ev", {"x": 1}])));
    }

    #[test]
    fn malformed_packets_are_refused() {
        for bad in [
            "",
            "9",
            "2",
            "2{}",
            "2[]",
            "3[]",
            "1{}",
            r#"2["x""#,
            "5-[\"x\"]",
            "5x-[\"x\"]",
            r#"599-["x"]"#,
            r#"21234567890123456["x"]"#,
            "0[1]",
        ] {
            assert!(Packet::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders_become_their_attachments() {
        let mut data = json!(["up", {"file": {"_placeholder": true, "num": 0}}]);
        let mut got = [Some(bytes::Bytes::from_static(&[1, 2]))];
        assert!(fill_placeholders(&mut data, &mut got));
        assert_eq!(data, json!(["up", {"file": [1, 2]}]));
        let mut missing = json!([{"_placeholder": true, "num": 3}]);
        assert!(!fill_placeholders(&mut missing, &mut []));
    }

    #[test]
    fn a_msgpack_connect_without_auth_has_no_data() {
        // notepack writes JS `undefined` as extension 0: d4 00 00.
        let mut bytes = vec![0x83, 0xa4];
        bytes.extend_from_slice(b"type");
        bytes.push(0x00);
        bytes.push(0xa3);
        bytes.extend_from_slice(b"nsp");
        bytes.extend_from_slice(&[0xa1, b'/', 0xa4]);
        bytes.extend_from_slice(b"data");
        for data in [&[0xd4, 0x00, 0x00][..], &[0xc0][..]] {
            let mut b = bytes.clone();
            b.extend_from_slice(data);
            let value = crate::change::value::msgpack_value(&b).unwrap();
            let p = Packet::from_msgpack(value).unwrap();
            assert_eq!((p.kind, p.data), (Kind::Connect, None));
        }
        let mut other_ext = bytes.clone();
        other_ext.extend_from_slice(&[0xd4, 0x05, 0x01]);
        assert!(crate::change::value::msgpack_value(&other_ext).is_err());
    }

    #[test]
    fn each_attachment_is_named_by_exactly_one_placeholder() {
        let p = |n: u64| json!({"_placeholder": true, "num": n});
        assert!(check_placeholders(&json!(["e", p(1), [p(0)]]), 2).is_ok());
        let twice = json!(["e", p(0), p(0)]);
        assert_eq!(
            check_placeholders(&twice, 1),
            Err(BadPacket("two placeholders name one attachment"))
        );
        let many = Value::Array((0..1200).map(|_| p(0)).collect());
        assert!(check_placeholders(&many, 1).is_err());
        assert!(check_placeholders(&json!(["e", p(0)]), 2).is_err());
        assert!(check_placeholders(&json!(["e", p(2)]), 2).is_err());
        assert!(check_placeholders(&json!(["e", {"_placeholder": true}]), 1).is_err());
        assert!(check_placeholders(&json!(["e", p(u64::MAX)]), 1).is_err());
    }

    #[test]
    fn a_placeholder_takes_its_attachment_once() {
        let p = json!({"_placeholder": true, "num": 0});
        let mut data = json!([p.clone(), p]);
        let mut got = [Some(bytes::Bytes::from_static(&[7]))];
        assert!(!fill_placeholders(&mut data, &mut got));
    }
}
