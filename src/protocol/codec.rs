//! Frames on the wire: `[event, data]` or `[event, data, rid]`, as MessagePack
//! (binary frames) or JSON (text frames). Incoming frames of either kind are
//! decoded into [`InFrame`] with `data` as a `serde_json::Value`, so request
//! parsing is one code path for both encodings. Outgoing frames use the
//! connection's negotiated [`Encoding`].

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::RequestError;

/// A connection's negotiated wire encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    MsgPack,
    Json,
}

impl Encoding {
    pub const MSGPACK_PROTOCOL: &'static str = "rtsync.v1.msgpack";
    pub const JSON_PROTOCOL: &'static str = "rtsync.v1.json";

    /// Picks the first subprotocol we speak from a `Sec-WebSocket-Protocol`
    /// header; `None` when the client offered some but none we know.
    pub fn negotiate(offered: Option<&str>) -> Option<(Encoding, Option<&'static str>)> {
        let Some(offered) = offered else {
            return Some((Encoding::MsgPack, None));
        };
        for p in offered.split(',').map(str::trim) {
            if p == Self::MSGPACK_PROTOCOL {
                return Some((Encoding::MsgPack, Some(Self::MSGPACK_PROTOCOL)));
            }
            if p == Self::JSON_PROTOCOL {
                return Some((Encoding::Json, Some(Self::JSON_PROTOCOL)));
            }
        }
        None
    }

    pub fn index(self) -> usize {
        match self {
            Encoding::MsgPack => 0,
            Encoding::Json => 1,
        }
    }
}

/// One decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct InFrame {
    pub event: String,
    pub data: Value,
    pub rid: Option<u64>,
}

/// Longest event name we look at; longer ones are answered `unknown_event`.
const MAX_EVENT_NAME: usize = 64;

/// Decodes one frame. `text` says whether it came as a text (JSON) frame.
/// Never panics, whatever the bytes.
pub fn decode_frame(bytes: &[u8], text: bool) -> Result<InFrame, RequestError> {
    let value: Value = if text {
        serde_json::from_slice(bytes)
            .map_err(|e| RequestError::bad_request(format!("invalid JSON frame: {e}")))?
    } else {
        msgpack_value(bytes)
            .map_err(|e| RequestError::bad_request(format!("invalid MessagePack frame: {e}")))?
    };
    frame_from_value(value)
}

fn frame_from_value(value: Value) -> Result<InFrame, RequestError> {
    let Value::Array(items) = value else {
        return Err(RequestError::bad_request(
            "a frame is an array [event, data, rid?]",
        ));
    };
    if items.is_empty() || items.len() > 3 {
        return Err(RequestError::bad_request(
            "a frame is an array [event, data, rid?]",
        ));
    }
    let mut items = items.into_iter();
    let event = match items.next() {
        Some(Value::String(s)) if s.len() <= MAX_EVENT_NAME => s,
        Some(Value::String(_)) => return Err(RequestError::bad_request("event name too long")),
        _ => return Err(RequestError::bad_request("event must be a string")),
    };
    let data = items.next().unwrap_or(Value::Null);
    let rid = match items.next() {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| RequestError::bad_request("rid must be an unsigned integer"))?,
        ),
        Some(_) => return Err(RequestError::bad_request("rid must be an unsigned integer")),
    };
    Ok(InFrame { event, data, rid })
}

pub use crate::change::value::{msgpack_value, MAX_DEPTH};

/// Best-effort `rid` of a frame that failed to decode, so the error can
/// still be correlated by the client. Lenient where [`decode_frame`] is
/// strict (a NaN inside still has a rid), with the same depth limit.
pub fn salvage_rid(bytes: &[u8], text: bool) -> Option<u64> {
    use serde::Deserialize;
    let value: Value = if text {
        serde_json::from_slice(bytes).ok()?
    } else {
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        de.set_max_depth(MAX_DEPTH);
        Value::deserialize(&mut de).ok()?
    };
    value.as_array()?.get(2)?.as_u64()
}

/// Encodes `[event, data]` or `[event, data, rid]`.
pub fn encode_frame<T: Serialize + ?Sized>(
    encoding: Encoding,
    event: &str,
    data: &T,
    rid: Option<u64>,
) -> Bytes {
    let encoded = match (encoding, rid) {
        (Encoding::MsgPack, None) => {
            rmp_serde::to_vec_named(&(event, data)).map_err(|e| e.to_string())
        }
        (Encoding::MsgPack, Some(r)) => {
            rmp_serde::to_vec_named(&(event, data, r)).map_err(|e| e.to_string())
        }
        (Encoding::Json, None) => serde_json::to_vec(&(event, data)).map_err(|e| e.to_string()),
        (Encoding::Json, Some(r)) => {
            serde_json::to_vec(&(event, data, r)).map_err(|e| e.to_string())
        }
    };
    match encoded {
        Ok(v) => Bytes::from(v),
        // Our own payload types always serialize; keep the connection alive
        // with an `internal` error rather than panicking if one ever does not.
        Err(e) => {
            tracing::error!(event, error = %e, "failed to encode an outgoing frame");
            let body = super::error::ErrorBody {
                code: super::ErrorCode::Internal,
                message: "failed to encode a frame",
                event: Some(event),
            };
            match encoding {
                Encoding::MsgPack => {
                    Bytes::from(rmp_serde::to_vec_named(&("error", body, rid)).unwrap_or_default())
                }
                Encoding::Json => {
                    Bytes::from(serde_json::to_vec(&("error", body, rid)).unwrap_or_default())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_json_frame_with_rid() {
        let f = decode_frame(br#"["heartbeat", {"tableId": "t1"}, 7]"#, true).unwrap();
        assert_eq!(f.event, "heartbeat");
        assert_eq!(f.data, json!({"tableId": "t1"}));
        assert_eq!(f.rid, Some(7));
    }

    #[test]
    fn decodes_msgpack_frame_without_rid() {
        let bytes = rmp_serde::to_vec_named(&("heartbeat", json!({"tableId": "t1"}))).unwrap();
        let f = decode_frame(&bytes, false).unwrap();
        assert_eq!(f.rid, None);
        assert_eq!(f.data["tableId"], "t1");
    }

    #[test]
    fn rejects_non_array_and_bad_rid() {
        assert!(decode_frame(br#"{"a":1}"#, true).is_err());
        assert!(decode_frame(br#"["x", {}, -1]"#, true).is_err());
        assert!(decode_frame(br#"["x", {}, "7"]"#, true).is_err());
        assert!(decode_frame(br#"[1, {}]"#, true).is_err());
        assert!(decode_frame(b"\xc1\xff\x00", false).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let mut deep = vec![0x92, 0xa1, b'x'];
        deep.extend(std::iter::repeat_n(0x91, 100_000));
        deep.push(0xc0);
        assert!(decode_frame(&deep, false).is_err());
        let json = format!("[\"x\", {}{}]", "[".repeat(10_000), "]".repeat(10_000));
        assert!(decode_frame(json.as_bytes(), true).is_err());
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate() {
        // array32 of 2^32-1 items, map32, str32, bin32 with nothing after.
        for bytes in [
            &[0xdd, 0xff, 0xff, 0xff, 0xff][..],
            &[0x92, 0xa1, b'x', 0xdf, 0xff, 0xff, 0xff, 0xff],
            &[0x92, 0xdb, 0xff, 0xff, 0xff, 0xff],
            &[0x92, 0xa1, b'x', 0xc6, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(decode_frame(bytes, false).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes, false);
            let _ = decode_frame(&bytes, true);
            let _ = salvage_rid(&bytes, false);
        }

        #[test]
        fn truncated_valid_frames_never_panic(cut in 0usize..64) {
            let bytes = rmp_serde::to_vec_named(&("record_change", json!({"tableId": "t", "changes": [{"fieldId": "f", "newValue": [1, 2, {"a": "b"}]}]}), 5)).unwrap();
            let cut = cut.min(bytes.len());
            let _ = decode_frame(&bytes[..cut], false);
        }
    }

    #[test]
    fn non_finite_numbers_are_refused_not_nulled() {
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let bytes =
                rmp_serde::to_vec_named(&("record_change", json!({"version": 1}), 1)).unwrap();
            assert!(decode_frame(&bytes, false).is_ok());
            let mut frame = vec![0x92, 0xad];
            frame.extend_from_slice(b"record_change");
            frame.extend_from_slice(&[0x81, 0xa7]);
            frame.extend_from_slice(b"version");
            frame.push(0xcb);
            frame.extend_from_slice(&x.to_be_bytes());
            assert!(decode_frame(&frame, false).is_err(), "{x} refused");
        }
        let mut finite = vec![0x92, 0xa1, b'x', 0xcb];
        finite.extend_from_slice(&1.5f64.to_be_bytes());
        assert_eq!(decode_frame(&finite, false).unwrap().data, json!(1.5));
    }

    #[test]
    fn encodes_json_frame_as_array() {
        let b = encode_frame(Encoding::Json, "ack", &json!({"a": 1}), Some(3));
        assert_eq!(&b[..], br#"["ack",{"a":1},3]"#);
    }

    #[test]
    fn negotiates_subprotocols() {
        assert_eq!(Encoding::negotiate(None), Some((Encoding::MsgPack, None)));
        assert_eq!(
            Encoding::negotiate(Some("foo, rtsync.v1.json")).map(|x| x.0),
            Some(Encoding::Json)
        );
        assert_eq!(Encoding::negotiate(Some("foo")), None);
    }
}
