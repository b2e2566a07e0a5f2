//! A connection's bounded outbound queue and its writer task. Everything a
//! connection is sent (replies, fan-out frames) goes through one queue, so
//! frames leave in the order they were queued. A queue that is full means the
//! client cannot keep up: it is closed with 4503 instead of growing memory.
//!
//! The writer owns the socket's write half and writes the frames itself
//! ([`wire_writer`]): each wake-up's queued frames go out together in
//! vectored writes of the shared payload bytes.
//!
//! The writer never fails quietly: a write that errors (a dead socket) or
//! does not finish within the write timeout closes the connection (4503 for
//! a socket that does not drain, 1011 for a failed write), counts it, and
//! cancels the session, whose read loop then ends.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub mod frame_queue;
pub mod long_poll;
pub mod pipe;
pub mod wire_writer;

use crate::compression::Deflate;
use crate::protocol::Framing;
use frame_queue::{FrameQueue, PushError};
use wire_writer::{close_payload, Burst, Opcode};

/// Close codes of docs/protocol.md section 5.
/// The close codes, named (their numbers live in [`CloseCode`]).
pub use crate::protocol::CloseCode;

/// One queued frame, with the stream time of the event it carries (for the
/// fan-out latency metric).
pub struct Outbound {
    bytes: Bytes,
    event_ms: Option<u64>,
    kind: Kind,
    /// Where the compressed form of a frame shared by an audience is kept.
    deflated: Option<DeflatedCell>,
}

/// The compressed form of a shared frame, made once by the first
/// connection that compresses it (`None` inside: it would not shrink).
type DeflatedCell = Arc<std::sync::OnceLock<Option<Bytes>>>;

/// A frame for [`Outbox::push`]: its bytes and, when one frame goes to a
/// whole audience (the hub's fan-out), the cell its compressed form is
/// kept in, so the audience's frame is compressed at most once however
/// many subscribers get it.
#[derive(Clone)]
pub struct Frame {
    bytes: Bytes,
    deflated: Option<DeflatedCell>,
}

impl Frame {
    /// A frame shared by an audience (compressed once on first need).
    pub fn shared(bytes: Bytes) -> Frame {
        Frame {
            bytes,
            deflated: Some(DeflatedCell::default()),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl From<Bytes> for Frame {
    /// A frame for one connection (compressed for it alone, if at all).
    fn from(bytes: Bytes) -> Frame {
        Frame {
            bytes,
            deflated: None,
        }
    }
}

/// What a queued frame is on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A frame of the connection's framing (binary or text as it says).
    Data,
    /// Always a text message (Engine.IO's own packets).
    Text,
    /// Always a binary message (an Engine.IO binary packet; `b` + base64
    /// in a long-polling body).
    Binary,
    Ping,
    Pong,
}

/// A connection's framing: the one it opened with, or the one it chose
/// once (a Socket.IO client whose CONNECT came in the msgpack parser's
/// binary form). Reading it is one atomic load.
struct FramingCell {
    initial: &'static dyn Framing,
    chosen: std::sync::OnceLock<&'static dyn Framing>,
}

impl FramingCell {
    fn get(&self) -> &'static dyn Framing {
        self.chosen.get().copied().unwrap_or(self.initial)
    }
}

/// What the sending and receiving sides share, in one allocation (every
/// idle connection holds one, and the hub a handle to it per table).
struct Shared {
    queue: FrameQueue<Outbound>,
    closing: CancellationToken,
    close_code: AtomicU16,
    /// Bytes queued and not yet written, bounded by `max_bytes`.
    queued: AtomicUsize,
    max_bytes: usize,
    /// How the connection's frames look (the hub builds frames per framing).
    framing: FramingCell,
}

/// The sending side of a connection, cheap to clone into the hub.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
    pub conn_id: Arc<str>,
}

/// The receiving side, owned by the writer task.
pub struct OutboxReceiver {
    shared: Arc<Shared>,
    /// A pause after each message written, if any (see
    /// [`OutboxReceiver::pace`]).
    pace: Option<Duration>,
    /// Outbound compression, when the connection negotiated it.
    deflate: Option<Deflate>,
}

/// A queue of at most `capacity` frames and `max_bytes` bytes.
pub fn outbox(
    conn_id: Arc<str>,
    framing: &'static dyn Framing,
    capacity: usize,
    max_bytes: usize,
) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        queue: FrameQueue::new(capacity),
        closing: CancellationToken::new(),
        close_code: AtomicU16::new(0),
        queued: AtomicUsize::new(0),
        max_bytes,
        framing: FramingCell {
            initial: framing,
            chosen: std::sync::OnceLock::new(),
        },
    });
    (
        Outbox {
            shared: shared.clone(),
            conn_id,
        },
        OutboxReceiver {
            shared,
            pace: None,
            deflate: None,
        },
    )
}

impl Outbox {
    /// How the connection's frames look now.
    pub fn framing(&self) -> &'static dyn Framing {
        self.shared.framing.get()
    }

    /// Switches the connection to `framing`, once (false if it had chosen).
    pub fn choose_framing(&self, framing: &'static dyn Framing) -> bool {
        self.shared.framing.chosen.set(framing).is_ok()
    }

    /// Queues a frame that always goes as a text message (Engine.IO's own
    /// packets: `open`, pings, pongs), whatever the framing's data frames.
    pub fn push_text(&self, bytes: Bytes) -> bool {
        self.enqueue(Outbound {
            bytes,
            event_ms: None,
            kind: Kind::Text,
            deflated: None,
        })
    }

    /// Queues a frame that always goes as a binary message (an Engine.IO
    /// binary packet), whatever the framing's data frames.
    pub fn push_binary(&self, bytes: Bytes) -> bool {
        self.enqueue(Outbound {
            bytes,
            event_ms: None,
            kind: Kind::Binary,
            deflated: None,
        })
    }

    /// Queues a frame; a full queue drops the connection as a slow consumer.
    /// Returns false when the frame was not queued.
    pub fn push(&self, frame: impl Into<Frame>, event_ms: Option<u64>) -> bool {
        let frame = frame.into();
        self.enqueue(Outbound {
            bytes: frame.bytes,
            event_ms,
            kind: Kind::Data,
            deflated: frame.deflated,
        })
    }

    /// Queues a frame, waiting for room: for long replies (recovery) whose
    /// reader sets the pace. False when the connection is closing.
    pub async fn push_wait(&self, bytes: Bytes) -> bool {
        let len = bytes.len();
        let out = Outbound {
            bytes,
            event_ms: None,
            kind: Kind::Data,
            deflated: None,
        };
        self.shared.queued.fetch_add(len, Ordering::AcqRel);
        let sent = tokio::select! {
            r = self.shared.queue.push(out) => r.is_ok(),
            _ = self.shared.closing.cancelled() => false,
        };
        if !sent {
            self.shared.queued.fetch_sub(len, Ordering::AcqRel);
        }
        sent
    }

    /// Queues a frame once the queue has room for its bytes (within
    /// `RTS_SEND_QUEUE_BYTES`, or the queue is empty) and a slot: for
    /// replies whose reader sets the pace (history, recovery), so a reader
    /// that does not drain never makes the sidecar hold more than its
    /// queue's bound. A socket that stays full is closed by the writer's
    /// timeout (4503). False when the connection is closing.
    pub async fn push_paced(&self, bytes: Bytes) -> bool {
        let len = bytes.len();
        let queued = &self.shared.queued;
        let max = self.shared.max_bytes;
        let room = self.shared.queue.wait_room(|| {
            let q = queued.load(Ordering::Acquire);
            q == 0 || q + len <= max
        });
        tokio::select! {
            _ = room => {}
            _ = self.shared.closing.cancelled() => return false,
        }
        self.push_wait(bytes).await
    }

    /// Queues a WebSocket ping (keeps idle connections alive through
    /// proxies and finds dead peers).
    pub fn ping(&self) -> bool {
        self.enqueue(Outbound {
            bytes: Bytes::new(),
            event_ms: None,
            kind: Kind::Ping,
            deflated: None,
        })
    }

    /// Queues the answer to a client's ping (RFC 6455 5.5.3: same payload).
    pub fn pong(&self, payload: Bytes) -> bool {
        self.enqueue(Outbound {
            bytes: payload,
            event_ms: None,
            kind: Kind::Pong,
            deflated: None,
        })
    }

    fn enqueue(&self, out: Outbound) -> bool {
        let len = out.bytes.len();
        let queued = self.shared.queued.fetch_add(len, Ordering::AcqRel) + len;
        // One frame over the limit still goes to a connection that is
        // keeping up (nothing else queued); otherwise too many bytes waiting
        // means the reader is too slow.
        let too_many_bytes = queued > self.shared.max_bytes && queued > len;
        let sent = if too_many_bytes {
            Err(PushError::Full(out))
        } else {
            self.shared.queue.try_push(out)
        };
        if sent.is_err() {
            self.shared.queued.fetch_sub(len, Ordering::AcqRel);
        }
        match sent {
            Ok(()) => true,
            Err(PushError::Full(_)) => {
                self.drop_slow();
                false
            }
            Err(PushError::Closed(_)) => false,
        }
    }

    /// Bytes this connection may have queued.
    pub fn max_bytes(&self) -> usize {
        self.shared.max_bytes
    }

    /// Closes the connection as a slow consumer (4503), counted and logged.
    pub fn drop_slow(&self) {
        if !self.shared.closing.is_cancelled() {
            crate::metrics::slow_consumer_dropped();
            tracing::warn!(conn = %self.conn_id, "slow consumer: outbound queue full, closing 4503");
            self.close(CloseCode::SlowConsumer);
        }
    }

    /// Asks the writer to close the connection with `code` after what is
    /// already queued (except for 4503, which closes at once). The first
    /// code asked for wins.
    pub fn close(&self, code: CloseCode) {
        let _ = self.shared.close_code.compare_exchange(
            0,
            code.code(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.shared.closing.cancel();
    }

    /// The close code asked for, if any (the first one wins).
    pub fn close_code(&self) -> Option<u16> {
        match self.shared.close_code.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }

    /// Resolves once a close was asked for.
    pub async fn closed(&self) {
        self.shared.closing.cancelled().await;
    }
}

impl OutboxReceiver {
    /// The next queued frame's bytes, if any (for tests of what was queued).
    pub fn try_next(&mut self) -> Option<Bytes> {
        let mut next = None;
        self.shared.queue.take(1, |o| next = Some(o.bytes));
        next
    }

    /// Writes one message at a time, with a pause after each (`None`, the
    /// default, writes what is queued in bursts). For the standalone
    /// Engine.IO layer's clients that take one message per read (see
    /// `socketio::server::Config::message_pacing`); rtsync's sessions never
    /// pace.
    pub fn pace(mut self, pause: Option<Duration>) -> OutboxReceiver {
        self.pace = pause;
        self
    }

    /// Compresses the data frames at or above the threshold (a connection
    /// that negotiated `permessage-deflate`); `None` sends all plain.
    pub fn deflate(mut self, deflate: Option<Deflate>) -> OutboxReceiver {
        self.deflate = deflate;
        self
    }

    /// The close code asked for, if any.
    pub fn close_code(&self) -> Option<u16> {
        match self.shared.close_code.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }
}

/// How long a close handshake may take before the socket is dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most frames gathered into one vectored write.
const BURST_FRAMES: usize = 256;

/// Why the writer gave up on a socket.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("the socket did not take a frame within {0:?}")]
    Timeout(Duration),
    #[error("write failed: {0}")]
    Failed(std::io::Error),
}

impl WriteError {
    /// Its label in the writer-error metric.
    fn label(&self) -> crate::metrics::WriterError {
        match self {
            WriteError::Timeout(_) => crate::metrics::WriterError::Timeout,
            WriteError::Failed(_) => crate::metrics::WriterError::Failed,
        }
    }

    fn close_code(&self) -> u16 {
        match self {
            WriteError::Timeout(_) => CloseCode::SlowConsumer.code(),
            WriteError::Failed(_) => CloseCode::SendFailed.code(),
        }
    }
}

impl OutboxReceiver {
    /// Drains the queue into the socket's write half until the connection
    /// closes. What is queued when the writer wakes goes out as one burst
    /// of vectored writes (see [`wire_writer`]). Each burst must be
    /// taken by the socket within `write_timeout`; any failure closes the
    /// connection (see the module docs), so a session is never left open
    /// and mute.
    pub async fn run<W>(mut self, mut io: W, write_timeout: Duration)
    where
        W: AsyncWrite + Unpin,
    {
        let result = self.drain(&mut io, write_timeout).await;
        if let Err(e) = &result {
            crate::metrics::writer_error(e.label());
            tracing::warn!(error = %e, code = e.close_code(), "closing the connection: the writer failed");
            let _ = self.shared.close_code.compare_exchange(
                0,
                e.close_code(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            self.shared.closing.cancel();
        }
        let code = match self.shared.close_code.load(Ordering::Acquire) {
            0 => CloseCode::Normal.code(),
            c => c,
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            // After a failed write the socket may be unusable; the close
            // frame is best effort within the deadline.
            if !matches!(result, Err(WriteError::Failed(_))) {
                let mut burst = Burst::default();
                burst.push(Opcode::Close, close_payload(code, reason(code)));
                let _ = burst.write_to(&mut io).await;
            }
            let _ = io.shutdown().await;
        })
        .await;
    }

    async fn drain<W>(&mut self, io: &mut W, limit: Duration) -> Result<(), WriteError>
    where
        W: AsyncWrite + Unpin,
    {
        let mut burst = Burst::default();
        let mut last = 0;
        while !self.shared.closing.is_cancelled() {
            let taken = self.take(&mut burst);
            if taken == 0 {
                if last <= 1 {
                    burst.release();
                }
                last = 0;
                tokio::select! {
                    biased;
                    _ = self.shared.closing.cancelled() => break,
                    _ = self.shared.queue.ready() => continue,
                }
            }
            last = taken;
            // One deadline per burst (not a timer per frame).
            bounded(limit, burst.write_to(io)).await?;
            if let Some(pause) = self.pace {
                tokio::time::sleep(pause).await;
            }
        }
        // Closing: what is queued still goes out first (but not to a slow
        // consumer, which is dropped at once).
        if self.shared.close_code.load(Ordering::Acquire) != CloseCode::SlowConsumer.code() {
            while self.take(&mut burst) > 0 {
                bounded(limit, burst.write_to(io)).await?;
            }
        }
        Ok(())
    }

    /// Moves what is waiting (up to a burst) into `burst`; how many frames.
    fn take(&mut self, burst: &mut Burst) -> usize {
        let queued = &self.shared.queued;
        let opcode = if self.shared.framing.get().binary() {
            Opcode::Binary
        } else {
            Opcode::Text
        };
        let most = if self.pace.is_some() { 1 } else { BURST_FRAMES };
        let deflate = self.deflate;
        self.shared.queue.take(most, |out| {
            let len = out.bytes.len();
            queued.fetch_sub(len, Ordering::AcqRel);
            let op = match out.kind {
                Kind::Data => opcode,
                Kind::Text => Opcode::Text,
                Kind::Binary => Opcode::Binary,
                Kind::Ping => Opcode::Ping,
                Kind::Pong => Opcode::Pong,
            };
            let data = matches!(out.kind, Kind::Data | Kind::Text | Kind::Binary);
            match deflate.filter(|d| data && d.wants(len)) {
                Some(_) => match compressed(&out.bytes, out.deflated.as_ref()) {
                    Some(packed) => burst.push_compressed(op, packed),
                    None => burst.push(op, out.bytes),
                },
                None => burst.push(op, out.bytes),
            }
            crate::metrics::frame_out(len, out.event_ms);
        })
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.shared.queue.close_receiver();
    }
}

/// The compressed form of a message, if it shrinks: from the audience's
/// cell when the frame is shared (made there by the first connection that
/// needs it), else made for this connection. Each compression is counted
/// once, with the bytes it saved.
fn compressed(bytes: &Bytes, cell: Option<&DeflatedCell>) -> Option<Bytes> {
    let make = || {
        let packed = Deflate::compress(bytes);
        let saved = packed.as_ref().map_or(0, |p| bytes.len() - p.len());
        crate::metrics::frame_compressed(packed.is_some(), saved);
        packed
    };
    match cell {
        Some(cell) => cell.get_or_init(make).clone(),
        None => make(),
    }
}

/// A socket operation with a deadline.
async fn bounded<F>(limit: Duration, op: F) -> Result<(), WriteError>
where
    F: std::future::Future<Output = std::io::Result<()>>,
{
    match tokio::time::timeout(limit, op).await {
        Ok(r) => r.map_err(WriteError::Failed),
        Err(_) => Err(WriteError::Timeout(limit)),
    }
}

fn reason(code: u16) -> &'static str {
    CloseCode::from_code(code).map_or("", CloseCode::reason)
}
