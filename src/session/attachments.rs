//! Binary attachments of Socket.IO's default parser (docs/protocol.md
//! section 10): a `BINARY_EVENT` arrives as its text packet, whose data
//! holds placeholders `{"_placeholder": true, "num": i}`, then one binary
//! message per attachment. The session keeps the text packet here until
//! its attachments arrived, then the request is dispatched with each
//! placeholder replaced by its bytes (an array of byte values, as a JSON
//! value has no bytes).
//!
//! Bounded before anything is built:
//! - only an authenticated connection's packet is collected; before that
//!   its attachments are read and dropped, never kept;
//! - the placeholders are checked when the text packet arrives: each names
//!   a distinct attachment and every attachment is named once, so filling
//!   them in costs each byte once;
//! - at most `packet::MAX_ATTACHMENTS` per packet (the decoder's), and
//!   their bytes together at most [`max_attachment_bytes`], so the filled
//!   in JSON (a `Value` per byte) stays within four frames' worth;
//! - the attachments must all arrive before a deadline (the Socket.IO
//!   ping timeout); a packet still waiting then is refused and freed.

use bytes::Bytes;
use tokio::time::Instant;

use crate::protocol::framing::ClientFrame;
use crate::protocol::{ErrorCode, RequestError};
use crate::socketio::packet::{check_placeholders, fill_placeholders, FILLED_BYTES_PER_BYTE};

/// The most bytes one packet's attachments may hold together: what keeps
/// the filled-in JSON within four frames (`4 × RTS_MAX_FRAME_BYTES`).
pub fn max_attachment_bytes(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_mul(4) / FILLED_BYTES_PER_BYTE
}

/// A request waiting for its attachments (or attachments being dropped).
#[derive(Debug)]
pub struct Partial {
    /// The request, or `None` when its attachments are only read and
    /// dropped (refused already).
    frame: Option<ClientFrame>,
    expected: usize,
    got: Vec<Option<Bytes>>,
    bytes: usize,
    /// When a request still waiting is refused.
    pub due: Instant,
}

/// What one more client message makes of a waiting request.
#[derive(Debug)]
pub enum Attach {
    /// More attachments to come.
    Wait,
    /// All arrived: the request, placeholders filled.
    Complete(ClientFrame),
    /// The request is refused (its `rid` for the error): too large, or a
    /// text message where an attachment was due (that message is then
    /// handled on its own).
    Refused(RequestError, Option<u64>),
    /// The last attachment of a refused request was dropped.
    Dropped,
}

impl Partial {
    /// The text packet of a binary event with `expected` attachments, due
    /// by `due`. A packet refused at once (before authentication, or for
    /// its placeholders) still has its attachments read and dropped:
    /// returned with the error to answer.
    pub fn new(
        frame: ClientFrame,
        expected: usize,
        authenticated: bool,
        due: Instant,
    ) -> (Partial, Option<RequestError>) {
        let refusal = if !authenticated {
            Some(RequestError::new(
                ErrorCode::Unauthenticated,
                "binary events are taken only after authentication",
            ))
        } else {
            check_placeholders(&frame.data, expected)
                .err()
                .map(|e| RequestError::bad_request(e.0))
        };
        let partial = Partial {
            frame: refusal.is_none().then_some(frame),
            expected,
            got: Vec::new(),
            bytes: 0,
            due,
        };
        (partial, refusal)
    }

    /// The request's `rid`, for an error.
    pub fn rid(&self) -> Option<u64> {
        self.frame.as_ref().and_then(|f| f.rid)
    }

    /// The refusal of a request whose attachments did not all arrive in
    /// time; `None` when it was refused already.
    pub fn expired(self) -> Option<(RequestError, Option<u64>)> {
        let rid = self.rid();
        self.frame.map(|_| {
            let e = RequestError::bad_request(format!(
                "{} binary attachment(s) did not arrive in time",
                self.expected - self.got.len()
            ));
            (e, rid)
        })
    }

    /// Takes the next client message; `max_frame_bytes` bounds them all.
    pub fn add(
        mut self,
        message: &[u8],
        text: bool,
        max_frame_bytes: usize,
    ) -> (Option<Partial>, Attach) {
        let rid = self.rid();
        if text {
            if self.frame.is_none() {
                return (None, Attach::Dropped);
            }
            let e = RequestError::bad_request(format!(
                "expected {} more binary attachment(s) before the next packet",
                self.expected - self.got.len()
            ));
            return (None, Attach::Refused(e, rid));
        }
        let Some(frame) = self.frame.take() else {
            // Refused already: the attachment is counted, not kept.
            self.got.push(None);
            if self.got.len() < self.expected {
                return (Some(self), Attach::Wait);
            }
            return (None, Attach::Dropped);
        };
        let max = max_attachment_bytes(max_frame_bytes);
        self.bytes = self.bytes.saturating_add(message.len());
        if self.bytes > max {
            let e = RequestError::new(
                ErrorCode::PayloadTooLarge,
                format!("binary attachments over {max} bytes in one packet"),
            );
            // The rest of its attachments are dropped as they come.
            self.got.push(None);
            let rest = (self.got.len() < self.expected).then_some(self);
            return (rest, Attach::Refused(e, rid));
        }
        self.got.push(Some(Bytes::copy_from_slice(message)));
        if self.got.len() < self.expected {
            self.frame = Some(frame);
            return (Some(self), Attach::Wait);
        }
        let mut frame = frame;
        if !fill_placeholders(&mut frame.data, &mut self.got) {
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

    fn frame(data: serde_json::Value) -> ClientFrame {
        ClientFrame {
            event: Err("x".into()),
            data,
            rid: Some(4),
        }
    }

    fn partial(data: serde_json::Value, expected: usize) -> Partial {
        let (p, refused) = Partial::new(frame(data), expected, true, Instant::now());
        assert!(refused.is_none(), "{refused:?}");
        p
    }

    fn ph(n: u64) -> serde_json::Value {
        json!({"_placeholder": true, "num": n})
    }

    #[test]
    fn the_request_completes_with_its_attachments_in_place() {
        let p = partial(json!({"a": ph(1), "b": ph(0)}), 2);
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
    fn a_text_message_or_too_many_bytes_refuse_it() {
        let p = partial(ph(0), 1);
        assert!(matches!(
            p.add(b"42[]", true, 1000).1,
            Attach::Refused(_, Some(4))
        ));
        let p = partial(ph(0), 1);
        let over = max_attachment_bytes(1000) + 1;
        assert!(matches!(
            p.add(&vec![0; over], false, 1000).1,
            Attach::Refused(..)
        ));
    }

    #[test]
    fn a_repeated_placeholder_is_refused_before_any_attachment() {
        let (p, refused) = Partial::new(frame(json!([ph(0), ph(0)])), 1, true, Instant::now());
        assert_eq!(refused.map(|e| e.code), Some(ErrorCode::BadRequest));
        // Its attachment is then read and dropped.
        assert!(matches!(
            p.add(&[1; 100], false, 1000),
            (None, Attach::Dropped)
        ));
    }

    #[test]
    fn before_authentication_attachments_are_dropped_unread() {
        let (p, refused) = Partial::new(frame(json!([ph(0), ph(1)])), 2, false, Instant::now());
        assert_eq!(refused.map(|e| e.code), Some(ErrorCode::Unauthenticated));
        let (p, step) = p.add(&[1; 100], false, 1000);
        assert!(matches!(step, Attach::Wait));
        let p = p.unwrap();
        assert_eq!(p.got.iter().flatten().count(), 0, "nothing kept");
        assert!(matches!(p.add(&[1], false, 1000), (None, Attach::Dropped)));
    }

    #[test]
    fn a_request_still_waiting_at_its_deadline_is_refused() {
        let p = partial(json!([ph(0), ph(1)]), 2);
        let (p, _) = p.add(&[1], false, 1000);
        let (e, rid) = p.unwrap().expired().unwrap();
        assert_eq!((e.code, rid), (ErrorCode::BadRequest, Some(4)));
    }
}
