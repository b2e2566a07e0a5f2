//! Inbound `permessage-deflate` (RFC 7692) for tungstenite, which has no
//! support for it and refuses any frame with RSV1 set: the bytes a client
//! sends are rewritten, between the socket and tungstenite, so that
//! tungstenite reads plain frames.
//!
//! Data flow: [`Inflater::need`] says what it needs; [`Inflater::feed`] is
//! given the raw bytes the socket read.
//! Frames without RSV1 (plain messages, control frames) pass through
//! untouched, header and payload. A compressed message's payload is
//! unmasked and inflated as it arrives, and handed on as a fragmented plain
//! message (each fragment at most [`CHUNK`] bytes, masked with a zero key,
//! which leaves the bytes as they are): so nothing is held beyond one chunk,
//! each poll does a bounded amount of work, and the inflated size is
//! checked as it grows. Past `limit` (`RTS_MAX_FRAME_BYTES`) the rewriter
//! hands on a frame header announcing more than the limit, which tungstenite
//! refuses as too long: the session closes 4413 as for any frame too large.
//!
//! Why a rewriter and not another WebSocket crate: rtsync writes its own
//! outbound frames and only uses tungstenite to parse inbound ones; the
//! rewriter keeps that parser (and every close path built on its errors)
//! while adding a bounded, streaming inflate with no context between
//! messages (the negotiation answers `client_no_context_takeover`).
//! An idle connection holds the header state only (a few dozen bytes); the
//! inflater and its buffers exist while a compressed message is read.

use flate2::{Decompress, FlushDecompress, Status};

use crate::compression::TAIL;

/// Largest fragment handed on (and most input inflated per step).
pub const CHUNK: usize = 16 * 1024;

/// The inbound rewriter of one connection (see the module docs).
pub struct Inflater {
    /// `RTS_MAX_FRAME_BYTES`: the length a refusal announces is past it.
    limit: usize,
    /// The most a message may inflate to now: the limit, or less before
    /// the connection authenticates (see [`Inflater::set_bound`]).
    bound: usize,
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current plain frame still to pass through.
    passthrough: u64,
    /// The compressed message being read, if any.
    message: Option<Box<Message>>,
    /// Bytes ready for tungstenite.
    out: Vec<u8>,
    out_pos: usize,
    /// The limit was passed: nothing more is read.
    done: bool,
}

/// A compressed message in progress.
struct Message {
    inflater: Decompress,
    opcode: u8,
    started: bool,
    /// Payload bytes of the current frame still to read, its mask key and
    /// the offset within the frame (for unmasking), and whether it is the
    /// message's last frame.
    remaining: u64,
    key: [u8; 4],
    offset: usize,
    fin: bool,
    input: Vec<u8>,
    in_pos: usize,
    tail_fed: bool,
    /// The last inflate filled its output: more may be waiting inside.
    drain: bool,
    chunk: Vec<u8>,
    inflated: usize,
    compressed: usize,
}

/// What the rewriter needs next.
pub enum Need {
    /// Bytes are ready in [`Inflater::ready`].
    Output,
    /// Up to this many raw bytes from the socket, given to
    /// [`Inflater::feed`].
    Input(usize),
    /// Raw payload of a plain frame, this many at most, passed through as
    /// they are (see [`Inflater::passed`]).
    Passthrough(usize),
    /// The limit was passed: end of input.
    End,
}

impl Inflater {
    pub fn new(limit: usize) -> Inflater {
        Inflater {
            limit,
            bound: limit,
            header: [0; 14],
            have: 0,
            passthrough: 0,
            message: None,
            out: Vec::new(),
            out_pos: 0,
            done: false,
        }
    }

    /// Lowers (or restores, up to the limit) what a message may inflate to:
    /// an unauthenticated connection may send no more than a small frame,
    /// so it must not make the sidecar inflate a large one either.
    pub fn set_bound(&mut self, bound: usize) {
        self.bound = bound.min(self.limit);
    }

    /// Bytes ready for tungstenite (taken with [`Inflater::consume`]).
    pub fn ready(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.out_pos += n;
        if self.out_pos >= self.out.len() {
            self.out_pos = 0;
            self.out.clear();
            if self.out.capacity() > CHUNK + 32 || self.message.is_none() {
                self.out = Vec::new();
            }
        }
    }

    /// What to do next; may produce output from input already fed.
    pub fn need(&mut self) -> Need {
        if !self.ready().is_empty() {
            return Need::Output;
        }
        if self.done {
            return Need::End;
        }
        if self.passthrough > 0 {
            return Need::Passthrough(usize::try_from(self.passthrough).unwrap_or(usize::MAX));
        }
        if let Some(message) = self.message.as_mut() {
            if message.remaining > 0 || message.in_pos < message.input.len() || message.drain {
                return self.inflate_step();
            }
            if message.fin && !message.tail_fed {
                message.input = TAIL.to_vec();
                message.in_pos = 0;
                message.tail_fed = true;
                return self.inflate_step();
            }
            if message.fin {
                return self.finish();
            }
        }
        Need::Input(self.header_missing())
    }

    /// A plain frame's payload bytes were passed through.
    pub fn passed(&mut self, n: usize) {
        self.passthrough = self.passthrough.saturating_sub(n as u64);
    }

    /// Raw bytes read from the socket, as [`Need::Input`] asked.
    pub fn feed(&mut self, mut raw: &[u8]) {
        if let Some(message) = self.message.as_mut().filter(|m| m.remaining > 0) {
            let n = raw
                .len()
                .min(usize::try_from(message.remaining).unwrap_or(usize::MAX));
            message.input.clear();
            message.in_pos = 0;
            for &b in &raw[..n] {
                message.input.push(b ^ message.key[message.offset % 4]);
                message.offset += 1;
            }
            message.remaining -= n as u64;
            message.compressed += n;
            raw = &raw[n..];
            if message.compressed > self.bound {
                self.too_large();
                return;
            }
        }
        for &b in raw {
            if self.done {
                return;
            }
            self.header[self.have] = b;
            self.have += 1;
            if self.have == header_len(&self.header[..self.have]) {
                self.header_done();
            }
        }
    }

    /// How many header bytes are still missing (at least 1).
    fn header_missing(&self) -> usize {
        header_len(&self.header[..self.have])
            .saturating_sub(self.have)
            .max(1)
    }

    fn header_done(&mut self) {
        let h = &self.header[..self.have];
        let (first, masked) = (h[0], h[1] & 0x80 != 0);
        let (rsv1, opcode, fin) = (first & 0x40 != 0, first & 0x0f, first & 0x80 != 0);
        // RSV2 and RSV3 mean nothing here: a frame with either goes to
        // tungstenite as it came (which refuses it), never rewritten.
        let other_rsv = first & 0x30 != 0;
        let len = payload_len(h);
        let in_message = self.message.is_some();
        let continues = in_message && opcode == 0 && !rsv1 && !other_rsv && masked;
        let starts = !in_message && rsv1 && !other_rsv && masked && (opcode == 1 || opcode == 2);
        if in_message && opcode < 8 && !continues {
            // Not the message's next fragment (a new message, RSV bits on
            // a continuation, no mask): tungstenite, which may not have seen
            // the message start yet, could not tell, so it is refused here.
            self.have = 0;
            tracing::debug!(
                opcode,
                rsv1,
                masked,
                "bad fragment inside a compressed message"
            );
            self.malformed();
            return;
        }
        if continues || starts {
            let mut key = [0; 4];
            key.copy_from_slice(&h[self.have - 4..self.have]);
            let message = self
                .message
                .get_or_insert_with(|| Box::new(Message::new(opcode)));
            message.remaining = len;
            message.key = key;
            message.offset = 0;
            message.fin = fin;
            // Refused at the header, as tungstenite refuses a plain frame
            // announcing more than the limit, before any payload is read.
            if (message.compressed as u64).saturating_add(len) > self.bound as u64 {
                self.have = 0;
                self.too_large();
                return;
            }
        } else {
            // Plain frames and control frames (which may come between a
            // message's fragments), and anything malformed, go to
            // tungstenite as they came: it refuses what is wrong.
            self.out.extend_from_slice(h);
            self.passthrough = len;
        }
        self.have = 0;
    }

    fn inflate_step(&mut self) -> Need {
        let Some(message) = self.message.as_mut() else {
            return Need::Input(1);
        };
        if message.in_pos >= message.input.len() && !message.drain {
            let want = usize::try_from(message.remaining).unwrap_or(usize::MAX);
            return Need::Input(want.min(CHUNK));
        }
        let room = CHUNK - message.chunk.len();
        let (before_in, before_out) = (message.inflater.total_in(), message.inflater.total_out());
        message.chunk.reserve_exact(room);
        let result = message.inflater.decompress_vec(
            &message.input[message.in_pos..],
            &mut message.chunk,
            FlushDecompress::Sync,
        );
        let used = (message.inflater.total_in() - before_in) as usize;
        let made = (message.inflater.total_out() - before_out) as usize;
        message.in_pos += used;
        message.inflated += made;
        message.drain = message.chunk.len() == CHUNK;
        if result.is_err() {
            return self.malformed();
        }
        if message.inflated > self.bound {
            return self.too_large_need();
        }
        // A message may end with a final block (RFC 7692 7.2.3.4): what
        // follows it, and input that makes no progress, is dropped.
        if used == 0 && made == 0 || matches!(result, Ok(Status::StreamEnd)) {
            message.in_pos = message.input.len();
            message.drain = false;
        }
        if message.chunk.len() == CHUNK {
            self.emit(false);
            return Need::Output;
        }
        self.need()
    }

    /// The message's last fragment.
    fn finish(&mut self) -> Need {
        self.emit(true);
        self.message = None;
        Need::Output
    }

    /// Hands on the inflated bytes so far as one fragment.
    fn emit(&mut self, fin: bool) {
        let Some(message) = self.message.as_mut() else {
            return;
        };
        let opcode = if message.started { 0 } else { message.opcode };
        message.started = true;
        let payload = std::mem::take(&mut message.chunk);
        push_header(&mut self.out, fin, opcode, payload.len() as u64);
        self.out.extend_from_slice(&payload);
        message.chunk = payload;
        message.chunk.clear();
    }

    fn too_large_need(&mut self) -> Need {
        self.too_large();
        Need::Output
    }

    /// Past the bound: a header announcing more than the limit, which
    /// tungstenite refuses as too long (4413); then nothing more is read.
    fn too_large(&mut self) {
        let opcode = match self.message.as_ref() {
            Some(m) if !m.started => m.opcode,
            _ => 0,
        };
        self.out.clear();
        self.out_pos = 0;
        push_header(&mut self.out, true, opcode, self.limit as u64 + 1);
        self.message = None;
        self.passthrough = 0;
        self.done = true;
    }

    /// Compressed bytes that do not inflate: a frame with RSV2 set, which
    /// tungstenite refuses as a protocol error.
    fn malformed(&mut self) -> Need {
        self.out.clear();
        self.out_pos = 0;
        self.out
            .extend_from_slice(&[0x80 | 0x20 | 0x01, 0x80, 0, 0, 0, 0]);
        self.message = None;
        self.done = true;
        Need::Output
    }
}

impl Message {
    fn new(opcode: u8) -> Message {
        Message {
            inflater: Decompress::new(false),
            opcode,
            started: false,
            remaining: 0,
            key: [0; 4],
            offset: 0,
            fin: false,
            input: Vec::new(),
            in_pos: 0,
            tail_fed: false,
            drain: false,
            chunk: Vec::with_capacity(CHUNK),
            inflated: 0,
            compressed: 0,
        }
    }
}

/// A client frame header (masked, with a zero key) of `len` bytes.
fn push_header(out: &mut Vec<u8>, fin: bool, opcode: u8, len: u64) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
}

/// The length of a header whose first bytes are `h` (2 until known).
fn header_len(h: &[u8]) -> usize {
    if h.len() < 2 {
        return 2;
    }
    let ext = match h[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if h[1] & 0x80 != 0 { 4 } else { 0 }
}

/// The payload length of a complete header.
fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => {
            let mut b = [0; 8];
            b.copy_from_slice(&h[2..10]);
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Deflate;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::{Error, Message as WsMessage};

    /// A client frame: masked with a non-zero key, RSV1 as given.
    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_header(&mut out, fin, opcode, payload.len() as u64);
        out[0] |= if rsv1 { 0x40 } else { 0 };
        let key = [0x12, 0x34, 0x56, 0x78];
        let at = out.len() - 4;
        out[at..].copy_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    /// What the rewriter hands on for `input`, given in `step`-byte reads.
    fn rewrite(input: &[u8], limit: usize, step: usize) -> Vec<u8> {
        rewrite_with(Inflater::new(limit), input, step)
    }

    fn rewrite_with(mut inflater: Inflater, input: &[u8], step: usize) -> Vec<u8> {
        let (mut at, mut out) = (0, Vec::new());
        loop {
            match inflater.need() {
                Need::Output => {
                    out.extend_from_slice(inflater.ready());
                    let n = inflater.ready().len();
                    inflater.consume(n);
                }
                Need::End => return out,
                Need::Passthrough(max) | Need::Input(max) => {
                    let n = max.min(step).min(input.len() - at);
                    if n == 0 {
                        return out;
                    }
                    let passthrough = matches!(inflater.need(), Need::Passthrough(_));
                    if passthrough {
                        out.extend_from_slice(&input[at..at + n]);
                        inflater.passed(n);
                    } else {
                        inflater.feed(&input[at..at + n]);
                    }
                    at += n;
                }
            }
        }
    }

    /// The messages tungstenite reads from `bytes` (or the error it stops at).
    async fn read(bytes: Vec<u8>, limit: usize) -> (Vec<WsMessage>, Option<Error>) {
        let config = WebSocketConfig::default()
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            std::io::Cursor::new(bytes),
            Role::Server,
            Some(config),
        )
        .await;
        let mut got = Vec::new();
        while let Some(m) = ws.next().await {
            match m {
                Ok(m) => got.push(m),
                // The input's end, with no close frame.
                Err(Error::Protocol(
                    tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )) => break,
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    fn text(n: usize) -> String {
        (0..n)
            .map(|i| format!("[\"field{}\",{}]", i % 30, i))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[tokio::test]
    async fn a_compressed_message_reaches_tungstenite_inflated_whatever_the_read_sizes() {
        let message = text(5000);
        let packed = Deflate::compress(message.as_bytes()).expect("shrinks");
        let mut input = frame(true, true, 1, &packed);
        input.extend(frame(true, false, 1, b"plain"));
        for step in [1, 7, 4096, 1 << 20] {
            let (got, err) = read(rewrite(&input, 1 << 20, step), 1 << 20).await;
            assert!(err.is_none(), "{err:?}");
            assert_eq!(
                got,
                vec![WsMessage::text(message.clone()), WsMessage::text("plain")]
            );
        }
    }

    #[tokio::test]
    async fn a_fragmented_compressed_message_with_a_ping_between_is_one_message() {
        let message = text(3000);
        let packed = Deflate::compress(message.as_bytes()).expect("shrinks");
        let (a, b) = packed.split_at(packed.len() / 2);
        let mut input = frame(false, true, 2, a);
        input.extend(frame(true, false, 9, b"p"));
        input.extend(frame(true, false, 0, b));
        let (got, err) = read(rewrite(&input, 1 << 20, 100), 1 << 20).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got[0], WsMessage::Ping("p".into()));
        assert_eq!(got[1], WsMessage::binary(message.into_bytes()));
    }

    #[tokio::test]
    async fn a_message_inflating_past_the_limit_is_refused_as_too_long_after_at_most_the_limit() {
        let bomb = vec![b'a'; 4 << 20];
        let packed = Deflate::compress(&bomb).expect("shrinks");
        let limit = 64 << 10;
        assert!(packed.len() < limit);
        let out = rewrite(&frame(true, true, 1, &packed), limit, 1 << 20);
        assert!(out.len() <= limit + CHUNK + 64, "handed on {}", out.len());
        let (_, err) = read(out, limit).await;
        assert!(matches!(err, Some(Error::Capacity(_))), "{err:?}");
    }

    #[test]
    fn an_idle_connection_holds_no_inflater_only_a_small_header_state() {
        let idle = Inflater::new(1 << 20);
        assert!(idle.message.is_none() && idle.out.capacity() == 0);
        assert!(std::mem::size_of::<Inflater>() <= 96);
    }

    /// The start of a compressed message that needs more fragments (small:
    /// nothing of it has been handed on yet).
    fn unfinished_message() -> Vec<u8> {
        let packed = Deflate::compress(text(300).as_bytes()).expect("shrinks");
        frame(false, true, 1, &packed[..packed.len() / 2])
    }

    #[tokio::test]
    async fn an_unmasked_continuation_of_a_compressed_message_is_a_protocol_error() {
        let mut input = unfinished_message();
        // Unmasked: no key in the header, which ends after two bytes.
        input.extend_from_slice(&[0x80, 3, b'a', b'b', b'c']);
        let (_, err) = read(rewrite(&input, 1 << 20, 64), 1 << 20).await;
        assert!(matches!(err, Some(Error::Protocol(_))), "{err:?}");
    }

    #[tokio::test]
    async fn a_continuation_with_rsv1_inside_a_compressed_message_is_a_protocol_error() {
        let mut input = unfinished_message();
        input.extend(frame(true, true, 0, b"abc"));
        let (_, err) = read(rewrite(&input, 1 << 20, 64), 1 << 20).await;
        assert!(matches!(err, Some(Error::Protocol(_))), "{err:?}");
    }

    #[tokio::test]
    async fn a_new_data_message_inside_a_compressed_message_is_a_protocol_error() {
        let mut input = unfinished_message();
        input.extend(frame(true, false, 1, b"plain"));
        let (got, err) = read(rewrite(&input, 1 << 20, 64), 1 << 20).await;
        assert!(got.is_empty(), "{got:?}");
        assert!(matches!(err, Some(Error::Protocol(_))), "{err:?}");
    }

    #[tokio::test]
    async fn rsv2_or_rsv3_on_a_compressed_message_or_its_continuation_is_a_protocol_error() {
        let packed = Deflate::compress(text(300).as_bytes()).expect("shrinks");
        for bit in [0x20, 0x10] {
            let mut start = frame(true, true, 1, &packed);
            start[0] |= bit;
            let (got, err) = read(rewrite(&start, 1 << 20, 64), 1 << 20).await;
            assert!(got.is_empty(), "{got:?}");
            assert!(matches!(err, Some(Error::Protocol(_))), "{err:?}");
            let (a, b) = packed.split_at(packed.len() / 2);
            let mut input = frame(false, true, 1, a);
            let mut rest = frame(true, false, 0, b);
            rest[0] |= bit;
            input.extend(rest);
            let (got, err) = read(rewrite(&input, 1 << 20, 64), 1 << 20).await;
            assert!(got.is_empty(), "{got:?}");
            assert!(matches!(err, Some(Error::Protocol(_))), "{err:?}");
        }
    }

    #[tokio::test]
    async fn a_compressed_frame_announcing_more_than_the_limit_is_refused_at_its_header() {
        let limit = 64 << 10;
        for len in [limit as u64 + 1, u64::MAX] {
            let mut header = Vec::new();
            push_header(&mut header, true, 2, len);
            header[0] |= 0x40;
            let (_, err) = read(rewrite(&header, limit, 64), limit).await;
            assert!(matches!(err, Some(Error::Capacity(_))), "{len}: {err:?}");
        }
    }

    #[tokio::test]
    async fn a_compressed_control_frame_is_a_protocol_error() {
        let (_, err) = read(rewrite(&frame(true, true, 9, b"p"), 1 << 20, 64), 1 << 20).await;
        assert!(matches!(err, Some(Error::Protocol(_))), "{err:?}");
    }

    #[tokio::test]
    async fn a_message_inflating_exactly_to_the_limit_is_read() {
        let message = text(2000);
        let limit = message.len();
        let packed = Deflate::compress(message.as_bytes()).expect("shrinks");
        let (got, err) = read(rewrite(&frame(true, true, 1, &packed), limit, 7), limit).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, vec![WsMessage::text(message)]);
    }

    #[tokio::test]
    async fn a_lowered_bound_refuses_a_message_inflating_past_it_as_too_long() {
        let message = text(5000);
        let packed = Deflate::compress(message.as_bytes()).expect("shrinks");
        let bound = packed.len() * 2;
        assert!(bound < message.len());
        let mut inflater = Inflater::new(1 << 20);
        inflater.set_bound(bound);
        let out = rewrite_with(inflater, &frame(true, true, 1, &packed), 1 << 20);
        assert!(out.len() <= bound + CHUNK + 64, "handed on {}", out.len());
        let (_, err) = read(out, 1 << 20).await;
        assert!(matches!(err, Some(Error::Capacity(_))), "{err:?}");
    }

    #[tokio::test]
    async fn compressed_bytes_that_do_not_inflate_are_a_protocol_error() {
        let (_, err) = read(
            rewrite(&frame(true, true, 1, &[0xff; 64]), 1 << 20, 64),
            1 << 20,
        )
        .await;
        assert!(matches!(err, Some(Error::Protocol(_))), "{err:?}");
    }
}
