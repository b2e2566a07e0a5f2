//! What a session reads from and writes to, whoever runs it (an rtsync
//! session, or an application of the standalone Engine.IO layer,
//! `socketio::server`). A WebSocket (`/ws`, or Engine.IO over WebSocket)
//! is read by tungstenite and written by the outbox's writer; a
//! long-polling connection (Engine.IO's polling) is read from a channel
//! its POSTs (and, after an upgrade, its WebSocket) feed, and written by
//! answering its GETs (`outbox::long_poll`).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

pub mod inflate;
pub mod socket;

use crate::outbox::long_poll::{PollCmd, PollFormat};
use crate::outbox::pipe::PipeReceiver;
use socket::{Socket, WriteHalf};

/// Where a session's client messages come from.
pub enum Input {
    Ws(Box<Socket>),
    /// Messages a long-polling connection's requests deliver, in order; an
    /// error or the channel's end ends the session.
    Channel(PipeReceiver<Result<Message, WsError>>),
}

/// Where a session's frames go.
pub enum Output {
    Ws(WriteHalf),
    Polling {
        cmds: PipeReceiver<PollCmd>,
        format: PollFormat,
    },
}

/// A connection's two sides, and its Engine.IO session id when it has one
/// (announced in the `open` packet; a long-polling connection may upgrade).
pub struct Transport {
    pub input: Input,
    pub output: Output,
    pub engine_sid: Option<String>,
    /// Outbound compression, when the WebSocket negotiated it.
    pub deflate: Option<crate::compression::Deflate>,
}

impl Input {
    /// The next client message; `None` once the client is gone.
    pub async fn next(&mut self) -> Option<Result<Message, WsError>> {
        match self {
            Input::Ws(socket) => socket.next().await,
            Input::Channel(rx) => rx.recv().await,
        }
    }

    /// Bounds what a compressed message may inflate to before tungstenite
    /// reads it (a channel's messages were bounded by their requests).
    pub fn set_inflate_bound(&mut self, bound: usize) {
        if let Input::Ws(socket) = self {
            socket.get_mut().set_inflate_bound(bound);
        }
    }

    /// Reads and drops what the client still sends, until it closes its
    /// side or `limit` passes. Unread input at close makes the kernel
    /// answer with a reset, which can destroy the close frame before the
    /// client reads it. (A channel holds nothing of the socket's.)
    pub async fn drain(&mut self, limit: Duration) {
        use tokio::io::AsyncReadExt;
        let Input::Ws(socket) = self else {
            return;
        };
        let raw = socket.get_mut();
        // On the heap: in the future it would be held by every idle
        // connection, drained or not.
        let mut buf = vec![0u8; 8192];
        let deadline = Instant::now() + limit;
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, raw.read(&mut buf)).await {
            if n == 0 {
                break;
            }
        }
    }
}
