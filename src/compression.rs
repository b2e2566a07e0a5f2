//! WebSocket `permessage-deflate` (RFC 7692) as rtsync uses it
//! (docs/protocol.md 1.1): the negotiation of an upgrade's
//! `Sec-WebSocket-Extensions` offer, and the raw-deflate compression of one
//! outbound message.
//!
//! Data flow: the upgrade asks [`negotiate`] for the answer header; a
//! connection that negotiated gets a [`Deflate`] in its writer, which asks
//! [`Deflate::compress`] for the wire form of each message at or above the
//! threshold (the outbox caches it per audience). Both sides run without
//! context takeover, so no connection ever holds a compressor or an
//! inflater between messages: compression uses one context per worker
//! thread, reset for every message; inflating (`transport::inflate`) holds
//! a context only while a compressed message is being read.
//! A leaf: it imports nothing of the crate.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
const EXTENSION: &str = "permessage-deflate";
/// The answer to an accepted offer: each compressed message stands alone
/// in both directions.
pub const ANSWER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// What ends a sync-flushed deflate stream; RFC 7692 7.2.1 removes it from
/// the frame and the receiver appends it again.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Whether the offers in `Sec-WebSocket-Extensions` header values include
/// one rtsync can accept (then the upgrade answers [`ANSWER`]).
///
/// An offer is refused when it asks for a server window under 15 bits (the
/// compressor always uses a 32 KiB window), repeats a parameter, or names
/// one RFC 7692 does not define; the next offer is then tried. Every
/// accepted offer is answered with `client_no_context_takeover`, which RFC
/// 7692 7.1.1.1 lets a server add even when the client did not offer it:
/// a client that keeps its context anyway sends frames that do not inflate
/// alone, and its connection is closed as malformed.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .any(acceptable)
}

/// One offer: `permessage-deflate` and its `;`-separated parameters.
fn acceptable(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case(EXTENSION))
    {
        return false;
    }
    let mut seen: Vec<String> = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (
                n.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"')),
            ),
            None => (param.to_ascii_lowercase(), None),
        };
        if seen.contains(&name) {
            return false;
        }
        let ok = match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
            ("client_max_window_bits", None) => true,
            ("client_max_window_bits", Some(bits)) => window_bits(bits).is_some(),
            ("server_max_window_bits", Some(bits)) => window_bits(bits) == Some(15),
            _ => false,
        };
        if !ok {
            return false;
        }
        seen.push(name);
    }
    true
}

/// A window size parameter's value, when valid (8 to 15, no leading zero).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') {
        return None;
    }
    value.parse().ok().filter(|b| (8..=15).contains(b))
}

/// A connection's outbound compression: messages of at least `threshold`
/// bytes are compressed. Two words, no context: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deflate {
    pub threshold: usize,
}

thread_local! {
    /// One compressor per worker thread, reset for every message, so no
    /// connection holds one.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

impl Deflate {
    /// Whether a message of `len` bytes is worth trying.
    pub fn wants(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// The message's payload as RFC 7692 sends it (raw deflate, sync flush,
    /// the trailing `00 00 ff ff` removed), or `None` when it would not be
    /// smaller than the message.
    pub fn compress(message: &[u8]) -> Option<Bytes> {
        COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            c.reset();
            compress_with(&mut c, message)
        })
    }
}

fn compress_with(c: &mut Compress, message: &[u8]) -> Option<Bytes> {
    // Room for the whole message: a result as large is useless anyway.
    let mut out: Vec<u8> = Vec::with_capacity(message.len() + 8);
    let mut input = message;
    loop {
        let (before_in, before_out) = (c.total_in(), out.len());
        let status = c.compress_vec(input, &mut out, FlushCompress::Sync).ok()?;
        let used = usize::try_from(c.total_in() - before_in).ok()?;
        input = &input[used..];
        if input.is_empty() && out.ends_with(&TAIL) {
            break;
        }
        let stuck = used == 0 && out.len() == before_out;
        if stuck || out.len() >= message.len() || matches!(status, Status::StreamEnd) {
            return None;
        }
    }
    out.truncate(out.len() - TAIL.len());
    // The buffer was sized for the whole message; a shared frame must not
    // pin that while it waits in subscribers' queues.
    out.shrink_to_fit();
    (out.len() < message.len()).then(|| Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn inflate(data: &[u8]) -> Vec<u8> {
        let mut d = Decompress::new(false);
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .expect("inflates");
        out
    }

    #[test]
    fn a_plain_offer_and_every_parameter_rtsync_can_honour_are_accepted() {
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=15; client_max_window_bits=10",
            "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
        ] {
            assert!(negotiate([offer]), "{offer}");
        }
    }

    #[test]
    fn offers_rtsync_cannot_honour_are_declined() {
        for offer in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; something_else",
        ] {
            assert!(!negotiate([offer]), "{offer}");
        }
    }

    #[test]
    fn a_declined_offer_falls_back_to_the_next_one() {
        assert!(negotiate([
            "permessage-deflate; server_max_window_bits=9, permessage-deflate"
        ]));
    }

    #[test]
    fn a_compressed_message_inflates_back_to_itself() {
        let message = "{\"field\":\"a long repeated value\"}".repeat(100);
        let packed = Deflate::compress(message.as_bytes()).expect("smaller");
        assert!(packed.len() < message.len() / 5);
        assert_eq!(inflate(&packed), message.as_bytes());
    }

    #[test]
    fn a_message_that_would_not_shrink_is_not_compressed() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..2048)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(Deflate::compress(&noise), None);
    }
}
