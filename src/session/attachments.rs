//! Binary attachments of Socket.IO's default parser (docs/protocol.md
//! section 10): a `BINARY_EVENT` arrives as its text packet, whose data
//! holds placeholders `{"_placeholder": true, "num": i}`, then one binary
//! message per attachment. The session keeps the text packet here until
//! its attachments arrived, then the request is dispatched with each
//! placeholder replaced by its bytes (an array of byte values, as a JSON
//! value has no bytes).
//!
//! Bounded: at most `packet::MAX_ATTACHMENTS` per packet (the decoder's),
//! and their bytes together at most an eighth of `RTS_MAX_FRAME_BYTES`, so
//! that the filled-in JSON stays within a few frames' worth of memory.

use bytes::Bytes;

use crate::protocol::framing::ClientFrame;
use crate::protocol::RequestError;
use crate::socketio::packet::fill_placeholders;

/// A request waiting for its attachments.
#[derive(Debug)]
pub struct Partial {
    frame: ClientFrame,
    expected: usize,
    got: Vec<Bytes>,
    bytes: usize,
}

/// What one more client message makes of a waiting request.
#[derive(Debug)]
pub enum Attach {
    /// More attachments to come.
    Wait,
    /// All arrived: the request, placeholders filled.
    Complete(ClientFrame),
    /// The request is refused (its `rid` for the error): too large, a
    /// placeholder naming no attachment, or a text message where an
    /// attachment was due (that message is then handled on its own).
    Refused(RequestError, Option<u64>),
}

impl Partial {
    pub fn new(frame: ClientFrame, expected: usize) -> Partial {
        Partial {
            frame,
            expected,
            got: Vec::new(),
            bytes: 0,
        }
    }

    /// Takes the next client message; `max_frame_bytes` bounds them all.
    pub fn add(
        mut self,
        message: &[u8],
        text: bool,
        max_frame_bytes: usize,
    ) -> (Option<Partial>, Attach) {
        let rid = self.frame.rid;
        if text {
            let e = RequestError::bad_request(format!(
                "expected {} more binary attachment(s) before the next packet",
                self.expected - self.got.len()
            ));
            return (None, Attach::Refused(e, rid));
        }
        self.bytes += message.len();
        if self.bytes > max_frame_bytes / 8 {
            let e = RequestError::new(
                crate::protocol::ErrorCode::PayloadTooLarge,
                format!(
                    "binary attachments over {} bytes in one packet",
                    max_frame_bytes / 8
                ),
            );
            return (None, Attach::Refused(e, rid));
        }
        self.got.push(Bytes::copy_from_slice(message));
        if self.got.len() < self.expected {
            return (Some(self), Attach::Wait);
        }
        let mut frame = self.frame;
        if !fill_placeholders(&mut frame.data, &self.got) {
            let e = RequestError::bad_request("a placeholder names no attachment");
            return (None, Attach::Refused(e, rid));
        }
        (None, Attach::Complete(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn partial(data: serde_json::Value, expected: usize) -> Partial {
        let frame = ClientFrame {
            event: Err("x".into()),
            data,
            rid: Some(4),
        };
        Partial::new(frame, expected)
    }

    #[test]
    fn the_request_completes_with_its_attachments_in_place() {
        let p = partial(
            json!({"a": {"_placeholder": true, "num": 1}, "b": {"_placeholder": true, "num": 0}}),
            2,
        );
        let (p, step) = p.add(&[1], false, 1000);
        assert!(matches!(step, Attach::Wait));
        let (rest, step) = p.unwrap().add(&[2, 3], false, 1000);
        assert!(rest.is_none());
        let Attach::Complete(frame) = step else {
            panic!("{step:?}")
        };
        assert_eq!(frame.data, json!({"a": [2, 3], "b": [1]}));
    }

    #[test]
    fn a_text_message_too_many_bytes_or_a_bad_placeholder_refuse_it() {
        let p = partial(json!({"_placeholder": true, "num": 0}), 1);
        assert!(matches!(
            p.add(b"42[]", true, 1000).1,
            Attach::Refused(_, Some(4))
        ));
        let p = partial(json!({"_placeholder": true, "num": 0}), 1);
        assert!(matches!(
            p.add(&[0; 200], false, 1000).1,
            Attach::Refused(..)
        ));
        let p = partial(json!({"_placeholder": true, "num": 5}), 1);
        assert!(matches!(p.add(&[0], false, 1000).1, Attach::Refused(..)));
    }
}
