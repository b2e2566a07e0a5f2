//! The bench client's socket: a TCP stream that, when the client offered
//! `permessage-deflate` (RFC 7692), inflates the server's compressed
//! (RSV1) frames before tungstenite sees them, since tungstenite has no
//! permessage-deflate and fails a connection on RSV1.
//!
//! Data flow: bytes read from TCP land in `raw`; the HTTP answer of the
//! handshake is passed on as is (and read for the negotiated extension);
//! after it, when the extension was negotiated, each complete frame is
//! passed on unchanged, or, when it is compressed, re-framed as the plain
//! frame it stands for (its payload inflated with the `00 00 ff ff` tail
//! put back); without the extension every byte goes straight through.
//! What the client writes goes out unchanged (uncompressed frames are
//! always allowed). Every byte read from the socket is counted in
//! [`bytes_read`], so a scenario can say how many bytes crossed the wire.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use flate2::{Decompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The offer a browser makes; the server chooses the context takeover.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The tail a sender strips from each compressed message (RFC 7692 7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// The largest inflated message accepted (far above any bench event).
const MAX_MESSAGE: usize = 64 << 20;

static BYTES_READ: AtomicU64 = AtomicU64::new(0);
static BYTES_INFLATED: AtomicU64 = AtomicU64::new(0);

/// Bytes read from every bench socket so far (as they crossed the wire).
pub fn bytes_read() -> u64 {
    BYTES_READ.load(Ordering::Relaxed)
}

/// Bytes of compressed payloads read so far, and what they inflated to.
pub fn bytes_inflated() -> u64 {
    BYTES_INFLATED.load(Ordering::Relaxed)
}

enum State {
    /// Before the end of the handshake's answer.
    Handshake,
    /// Every byte goes straight through.
    Plain,
    /// The extension is negotiated: frames are read one by one.
    Frames(Box<Inflater>),
}

/// The inflate side of one negotiated connection.
struct Inflater {
    /// Created at the first compressed message (idle connections hold none).
    window: Option<Decompress>,
    /// The server keeps its window from message to message (it did not
    /// agree to `server_no_context_takeover`).
    takeover: bool,
    /// A compressed message whose later fragments are still to come: its
    /// opcode and the payload so far.
    partial: Option<(u8, Vec<u8>)>,
}

/// The bench client's socket (see the module doc).
pub struct Conn {
    tcp: TcpStream,
    state: State,
    /// Bytes read and not yet passed on.
    raw: Vec<u8>,
    /// Bytes ready for the reader, from `at` on.
    out: Vec<u8>,
    at: usize,
}

impl Conn {
    /// A socket for a client that offered the extension (`offered`) or not.
    pub fn new(tcp: TcpStream, offered: bool) -> Conn {
        Conn {
            tcp,
            state: if offered {
                State::Handshake
            } else {
                State::Plain
            },
            raw: Vec::new(),
            out: Vec::new(),
            at: 0,
        }
    }

    /// Moves what can be passed on from `raw` to `out`.
    fn process(&mut self) -> io::Result<()> {
        if let State::Handshake = self.state {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.raw[..end + 4]).to_ascii_lowercase();
            self.out.extend(self.raw.drain(..end + 4));
            let negotiated = head.lines().any(|l| {
                l.starts_with("sec-websocket-extensions:") && l.contains("permessage-deflate")
            });
            self.state = if negotiated {
                State::Frames(Box::new(Inflater {
                    window: None,
                    takeover: !head.contains("server_no_context_takeover"),
                    partial: None,
                }))
            } else {
                State::Plain
            };
        }
        match &mut self.state {
            State::Handshake => {}
            State::Plain => self.out.append(&mut self.raw),
            State::Frames(inflater) => {
                let used = inflater.frames(&self.raw, &mut self.out)?;
                self.raw.drain(..used);
            }
        }
        Ok(())
    }
}

/// One frame's header: (first byte, header length, payload length).
fn header(raw: &[u8]) -> Option<(u8, usize, usize)> {
    let (b0, b1) = (*raw.first()?, *raw.get(1)?);
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?])),
            4,
        ),
        127 => (u64::from_be_bytes(raw.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    if b1 & 0x80 != 0 {
        at += 4;
    }
    Some((b0, at, usize::try_from(len).ok()?))
}

/// An unmasked frame carrying `payload`.
fn frame(b0: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(b0);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

impl Inflater {
    /// Passes on every complete frame of `raw` (inflating compressed
    /// messages); returns how many bytes of `raw` it used.
    fn frames(&mut self, raw: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let mut used = 0;
        while let Some((b0, head, len)) = header(&raw[used..]) {
            let Some(whole) = raw.get(used..used + head + len) else {
                break;
            };
            let payload = &whole[head..];
            let (fin, rsv1, opcode) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0f);
            if opcode >= 8 || (!rsv1 && (opcode != 0 || self.partial.is_none())) {
                out.extend_from_slice(whole);
            } else if rsv1 && opcode != 0 {
                if fin {
                    let message = self.inflate(payload)?;
                    frame(0x80 | opcode, &message, out);
                } else {
                    self.partial = Some((opcode, payload.to_vec()));
                }
            } else if let Some((first, mut so_far)) = self.partial.take() {
                so_far.extend_from_slice(payload);
                if fin {
                    let message = self.inflate(&so_far)?;
                    frame(0x80 | first, &message, out);
                } else {
                    self.partial = Some((first, so_far));
                }
            }
            used += head + len;
        }
        Ok(used)
    }

    /// One compressed message, inflated.
    fn inflate(&mut self, payload: &[u8]) -> io::Result<Vec<u8>> {
        let d = self.window.get_or_insert_with(|| Decompress::new(false));
        if !self.takeover {
            d.reset(false);
        }
        let mut input = Vec::with_capacity(payload.len() + TAIL.len());
        input.extend_from_slice(payload);
        input.extend_from_slice(&TAIL);
        let mut message = Vec::with_capacity(payload.len() * 4 + 64);
        let start = d.total_in();
        loop {
            let consumed = (d.total_in() - start) as usize;
            if consumed >= input.len() && message.len() < message.capacity() {
                break;
            }
            if message.len() == message.capacity() {
                if message.len() >= MAX_MESSAGE {
                    return Err(io::Error::other("inflated message too large"));
                }
                message.reserve(message.capacity());
            }
            let before = (d.total_in(), message.len());
            d.decompress_vec(&input[consumed..], &mut message, FlushDecompress::Sync)
                .map_err(io::Error::other)?;
            if (d.total_in(), message.len()) == before {
                return Err(io::Error::other("a compressed frame that does not inflate"));
            }
        }
        BYTES_INFLATED.fetch_add(message.len() as u64, Ordering::Relaxed);
        Ok(message)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.at);
                buf.put_slice(&this.out[this.at..this.at + n]);
                this.at += n;
                if this.at == this.out.len() {
                    this.out.clear();
                    this.at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.state, State::Plain) && this.raw.is_empty() {
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
                let n = buf.filled().len() - before;
                BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 << 10];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                // End of stream: what is left is passed on as it is.
                this.out.append(&mut this.raw);
                if this.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
            this.raw.extend_from_slice(read.filled());
            this.process()?;
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn deflate(c: &mut Compress, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + 64);
        let _ = c.compress_vec(message, &mut out, FlushCompress::Sync);
        out.truncate(out.len() - 4);
        out
    }

    fn inflater(takeover: bool) -> Inflater {
        Inflater {
            window: None,
            takeover,
            partial: None,
        }
    }

    #[test]
    fn a_compressed_frame_becomes_the_plain_frame_it_stands_for() {
        let message = "a message that repeats, a message that repeats".repeat(40);
        let mut c = Compress::new(Compression::fast(), false);
        let mut raw = Vec::new();
        frame(0xc1, &deflate(&mut c, message.as_bytes()), &mut raw);
        frame(0x82, b"plain", &mut raw);
        let mut out = Vec::new();
        let used = inflater(false).frames(&raw, &mut out).unwrap_or(0);
        let mut want = Vec::new();
        frame(0x81, message.as_bytes(), &mut want);
        frame(0x82, b"plain", &mut want);
        assert_eq!((used, out), (raw.len(), want));
    }

    #[test]
    fn with_context_takeover_the_window_is_kept_between_messages() {
        let mut c = Compress::new(Compression::fast(), false);
        let mut inflater = inflater(true);
        for _ in 0..3 {
            let mut raw = Vec::new();
            frame(0xc1, &deflate(&mut c, b"the same text again"), &mut raw);
            let mut out = Vec::new();
            assert_eq!(inflater.frames(&raw, &mut out).ok(), Some(raw.len()));
            assert!(out.ends_with(b"the same text again"));
        }
    }

    #[test]
    fn a_fragmented_compressed_message_is_passed_on_whole_and_a_partial_frame_waits() {
        let mut c = Compress::new(Compression::fast(), false);
        let packed = deflate(&mut c, b"fragmented message");
        let mut raw = Vec::new();
        frame(0x41, &packed[..3], &mut raw);
        frame(0x80, &packed[3..], &mut raw);
        let mut out = Vec::new();
        let mut inflater = inflater(false);
        assert_eq!(
            inflater.frames(&raw[..raw.len() - 1], &mut out).ok(),
            Some(5)
        );
        assert_eq!(
            inflater.frames(&raw[5..], &mut out).ok(),
            Some(raw.len() - 5)
        );
        let mut want = Vec::new();
        frame(0x81, b"fragmented message", &mut want);
        assert_eq!(out, want);
    }
}
