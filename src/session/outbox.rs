//! A connection's bounded outbound queue and its writer task. Everything a
//! connection is sent (replies, fan-out frames) goes through one queue, so
//! frames leave in the order they were queued. A queue that is full means the
//! client cannot keep up: it is closed with 4503 instead of growing memory.
//!
//! The writer never fails quietly: a write or flush that errors (tungstenite's
//! `WriteBufferFull`, a dead socket) or does not finish within the write
//! timeout closes the connection (4503 for a socket that does not drain,
//! 1011 for a failed write), counts it, and cancels the session, whose read
//! loop then ends.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::protocol::Encoding;

/// Close codes of PROTOCOL.md section 5.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    /// A frame could not be written (the socket failed or refused it).
    pub const SEND_FAILED: u16 = 1011;
    pub const UNAUTHENTICATED: u16 = 4401;
    pub const AUTH_TIMEOUT: u16 = 4408;
    pub const FRAME_TOO_LARGE: u16 = 4413;
    pub const RATE_LIMITED: u16 = 4429;
    pub const SHUTTING_DOWN: u16 = 4500;
    pub const SLOW_CONSUMER: u16 = 4503;
}

/// One queued frame, with the stream time of the event it carries (for the
/// fan-out latency metric).
pub struct Outbound {
    bytes: Bytes,
    event_ms: Option<u64>,
    ping: bool,
}

/// The sending side of a connection, cheap to clone into the hub.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    closing: CancellationToken,
    close_code: Arc<AtomicU16>,
    /// Bytes queued and not yet written, bounded by `max_bytes`.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    pub conn_id: Arc<str>,
    pub encoding: Encoding,
}

/// The receiving side, owned by the writer task.
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Outbound>,
    closing: CancellationToken,
    close_code: Arc<AtomicU16>,
    queued: Arc<AtomicUsize>,
    encoding: Encoding,
}

/// A queue of at most `capacity` frames and `max_bytes` bytes.
pub fn outbox(
    conn_id: Arc<str>,
    encoding: Encoding,
    capacity: usize,
    max_bytes: usize,
) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let closing = CancellationToken::new();
    let close_code = Arc::new(AtomicU16::new(0));
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            closing: closing.clone(),
            close_code: close_code.clone(),
            queued: queued.clone(),
            max_bytes,
            conn_id,
            encoding,
        },
        OutboxReceiver {
            rx,
            closing,
            close_code,
            queued,
            encoding,
        },
    )
}

impl Outbox {
    /// Queues a frame; a full queue drops the connection as a slow consumer.
    /// Returns false when the frame was not queued.
    pub fn push(&self, bytes: Bytes, event_ms: Option<u64>) -> bool {
        self.enqueue(Outbound {
            bytes,
            event_ms,
            ping: false,
        })
    }

    /// Queues a frame, waiting for room: for long replies (recovery) whose
    /// reader sets the pace. False when the connection is closing.
    pub async fn push_wait(&self, bytes: Bytes) -> bool {
        let len = bytes.len();
        let out = Outbound {
            bytes,
            event_ms: None,
            ping: false,
        };
        self.queued.fetch_add(len, Ordering::AcqRel);
        let sent = tokio::select! {
            r = self.tx.send(out) => r.is_ok(),
            _ = self.closing.cancelled() => false,
        };
        if !sent {
            self.queued.fetch_sub(len, Ordering::AcqRel);
        }
        sent
    }

    /// Queues a WebSocket ping (keeps idle connections alive through
    /// proxies and finds dead peers).
    pub fn ping(&self) -> bool {
        self.enqueue(Outbound {
            bytes: Bytes::new(),
            event_ms: None,
            ping: true,
        })
    }

    fn enqueue(&self, out: Outbound) -> bool {
        let len = out.bytes.len();
        let queued = self.queued.fetch_add(len, Ordering::AcqRel) + len;
        // One frame over the limit still goes to a connection that is
        // keeping up (nothing else queued); otherwise too many bytes waiting
        // means the reader is too slow.
        let too_many_bytes = queued > self.max_bytes && queued > len;
        let sent = if too_many_bytes {
            Err(mpsc::error::TrySendError::Full(out))
        } else {
            self.tx.try_send(out)
        };
        if sent.is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
        }
        match sent {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.drop_slow();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Bytes this connection may have queued.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Closes the connection as a slow consumer (4503), counted and logged.
    pub fn drop_slow(&self) {
        if !self.closing.is_cancelled() {
            crate::metrics::slow_consumer_dropped();
            tracing::warn!(conn = %self.conn_id, "slow consumer: outbound queue full, closing 4503");
            self.close(close::SLOW_CONSUMER);
        }
    }

    /// Asks the writer to close the connection with `code` after what is
    /// already queued (except for 4503, which closes at once). The first
    /// code asked for wins.
    pub fn close(&self, code: u16) {
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.closing.cancel();
    }

    /// Resolves once a close was asked for.
    pub async fn closed(&self) {
        self.closing.cancelled().await
    }
}

impl OutboxReceiver {
    /// The next queued frame's bytes, if any (for tests of what was queued).
    pub fn try_next(&mut self) -> Option<Bytes> {
        self.rx.try_recv().ok().map(|o| o.bytes)
    }

    /// The close code asked for, if any.
    pub fn close_code(&self) -> Option<u16> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }
}

/// How long a close handshake may take before the socket is dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the writer gave up on a socket.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("the socket did not take a frame within {0:?}")]
    Timeout(Duration),
    #[error("tungstenite's write buffer is full")]
    BufferFull,
    #[error("write failed: {0}")]
    Failed(tokio_tungstenite::tungstenite::Error),
}

impl WriteError {
    fn from_ws(e: tokio_tungstenite::tungstenite::Error) -> WriteError {
        match e {
            tokio_tungstenite::tungstenite::Error::WriteBufferFull(_) => WriteError::BufferFull,
            e => WriteError::Failed(e),
        }
    }

    /// Label for the writer-error metric.
    fn kind(&self) -> &'static str {
        match self {
            WriteError::Timeout(_) => "timeout",
            WriteError::BufferFull => "buffer_full",
            WriteError::Failed(_) => "failed",
        }
    }

    fn close_code(&self) -> u16 {
        match self {
            WriteError::Timeout(_) => close::SLOW_CONSUMER,
            WriteError::BufferFull | WriteError::Failed(_) => close::SEND_FAILED,
        }
    }
}

impl OutboxReceiver {
    /// Drains the queue into the socket until the connection closes. Writes
    /// are fed back to back and flushed when the queue runs empty, so a burst
    /// costs one flush. Each write and flush must finish within
    /// `write_timeout`; any failure closes the connection (see the module
    /// docs), so a session is never left open and mute.
    pub async fn run<S>(mut self, mut sink: S, write_timeout: Duration)
    where
        S: Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    {
        let text = self.encoding == Encoding::Json;
        let result = self.drain(&mut sink, text, write_timeout).await;
        if let Err(e) = &result {
            crate::metrics::writer_error(e.kind());
            tracing::warn!(error = %e, code = e.close_code(), "closing the connection: the writer failed");
            let _ = self.close_code.compare_exchange(
                0,
                e.close_code(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            self.closing.cancel();
        }
        let code = match self.close_code.load(Ordering::Acquire) {
            0 => 1000,
            c => c,
        };
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason(code)),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            // After a failed write the socket may be unusable; the close
            // frame is best effort within the deadline.
            if !matches!(result, Err(WriteError::Failed(_))) {
                let _ = sink.send(Message::Close(Some(frame))).await;
            }
            let _ = sink.close().await;
        })
        .await;
    }

    async fn drain<S>(
        &mut self,
        sink: &mut S,
        text: bool,
        limit: Duration,
    ) -> Result<(), WriteError>
    where
        S: Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    {
        loop {
            tokio::select! {
                biased;
                _ = self.closing.cancelled() => break,
                next = self.rx.recv() => {
                    let Some(out) = next else { break };
                    // One deadline per burst (not a timer per frame): the
                    // burst and its flush must be taken by the socket in time.
                    bounded(limit, async {
                        self.write(sink, out, text).await?;
                        while let Ok(out) = self.rx.try_recv() {
                            self.write(sink, out, text).await?;
                        }
                        sink.flush().await
                    })
                    .await?;
                }
            }
        }
        // Closing: what is queued still goes out first (but not to a slow
        // consumer, which is dropped at once).
        if self.close_code.load(Ordering::Acquire) != close::SLOW_CONSUMER {
            bounded(limit, async {
                while let Ok(out) = self.rx.try_recv() {
                    self.write(sink, out, text).await?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    async fn write<S>(
        &mut self,
        sink: &mut S,
        out: Outbound,
        text: bool,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error>
    where
        S: Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    {
        self.queued.fetch_sub(out.bytes.len(), Ordering::AcqRel);
        let len = out.bytes.len();
        let msg = if out.ping {
            Message::Ping(out.bytes)
        } else if text {
            match Utf8Bytes::try_from(out.bytes) {
                Ok(t) => Message::Text(t),
                // Our JSON encoder writes UTF-8 only; never reached.
                Err(_) => return Ok(()),
            }
        } else {
            Message::Binary(out.bytes)
        };
        sink.feed(msg).await?;
        crate::metrics::frame_out(len, out.event_ms);
        Ok(())
    }
}

/// A socket operation with a deadline.
async fn bounded<F>(limit: Duration, op: F) -> Result<(), WriteError>
where
    F: std::future::Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
{
    match tokio::time::timeout(limit, op).await {
        Ok(r) => r.map_err(WriteError::from_ws),
        Err(_) => Err(WriteError::Timeout(limit)),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        close::UNAUTHENTICATED => "unauthenticated",
        close::AUTH_TIMEOUT => "authentication timeout",
        close::FRAME_TOO_LARGE => "frame too large",
        close::RATE_LIMITED => "rate limit exceeded",
        close::SHUTTING_DOWN => "server shutting down",
        close::SLOW_CONSUMER => "slow consumer",
        close::SEND_FAILED => "send failed",
        _ => "",
    }
}
