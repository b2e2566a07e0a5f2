//! One Engine.IO session of the standalone server, between its client's
//! [`Transport`] and its application's [`Conn`]: the same transport,
//! outbox and writers as an rtsync session on `/socket.io/`.
//!
//! ```text
//! Transport.input ──▶ Session::run ──Frame──▶ Conn.incoming ──▶ application
//! client ◀── writer (run / run_polling) ◀── Outbox ◀── Session::run ◀──Frame── Conn.outgoing
//! ```
//!
//! The loop reads the client's Engine.IO packets: it answers pings, takes
//! pongs (the shared [`Heartbeat`]: a ping every `pingInterval`, the
//! session closed when a pong is `pingTimeout` late, which also frees a
//! polling session nobody polls any more), ends on the client's close, and
//! hands messages (`4<text>`, binary) to the application, waiting for room:
//! the client is not read while the application is behind. The
//! application's frames go into the connection's [`Outbox`] as `4<text>`
//! text frames or binary frames; its writer sends them on the WebSocket,
//! or as the parked GET's body (binary as `b` + base64). The outbox's
//! bounds make the slow-consumer rule: past [`MAX_FRAMES`] frames or
//! [`MAX_PAYLOADS`] × maxPayload bytes queued, or a socket that takes no
//! bytes for a ping timeout, the session is closed.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Config;
use crate::outbox::{self, CloseCode, Outbox, OutboxReceiver};
use crate::protocol::SessionEnd;
use crate::socketio::engine::Packet;
use crate::socketio::framing::SOCKETIO_JSON;
use crate::socketio::heartbeat::{Beat, Heartbeat};
use crate::socketio::polling::{Link, Registry};
use crate::transport::{Input, Output, Transport};

/// A message between a session and its application. `Close` only goes
/// from the application to the session: it ends the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Bytes),
    Close,
}

/// A session as its application sees it: the client's messages in order,
/// and a way to send. The session ends when the application drops
/// `incoming` or sends [`Frame::Close`]; `incoming` ends when it does.
pub struct Conn {
    pub sid: String,
    pub incoming: mpsc::Receiver<Frame>,
    pub outgoing: mpsc::Sender<Frame>,
}

/// Frames queued for a client that does not read: past this many, or
/// past [`MAX_PAYLOADS`] × maxPayload bytes, the client is a slow consumer
/// and its session is closed.
pub const MAX_FRAMES: usize = 1024;
pub const MAX_PAYLOADS: usize = 4;

/// Messages buffered from the application to a session (it moves them to
/// the outbox at once), and from a session to its application.
pub const APP_QUEUE: usize = 256;
const TO_APP_QUEUE: usize = 16;

/// How long the writer may take to finish after the session ends.
const WRITER_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Why a session ended (logged): the shared [`SessionEnd`], of which
/// this layer uses `AppClosed`, `ClosedByServer` (the outbox closed: a slow
/// consumer, a failed write, or a request that broke the polling rules),
/// `ClientClosed`, `ClientGone`, `PingTimeout`, `TransportError`,
/// `ParseError` and `Stopped`.
type End = SessionEnd;

/// The WebSocket close code the writer sends at `end`.
fn close_code(end: End) -> CloseCode {
    end.close_code().unwrap_or(CloseCode::Normal)
}

/// A session's state, before and while it runs.
pub struct Session {
    config: Config,
    sid: String,
    outbox: Outbox,
    receiver: OutboxReceiver,
    to_app: mpsc::Sender<Frame>,
    from_app: mpsc::Receiver<Frame>,
    /// Engine.IO's heartbeat (the one rtsync's sessions run too), from
    /// the session's open.
    heartbeat: Heartbeat,
}

impl Session {
    /// A session opened at `opened`, and its application's side.
    pub fn new(config: Config, sid: String, opened: Instant) -> (Conn, Session) {
        // Small: each message may be maxPayload bytes.
        let (to_app, incoming) = mpsc::channel(TO_APP_QUEUE);
        let (outgoing, from_app) = mpsc::channel(APP_QUEUE);
        let max_bytes = MAX_PAYLOADS.saturating_mul(config.max_payload);
        let (outbox, receiver) =
            outbox::outbox(sid.as_str().into(), &SOCKETIO_JSON, MAX_FRAMES, max_bytes);
        let heartbeat = Heartbeat::new(config.ping_interval, config.ping_timeout, opened);
        let conn = Conn {
            sid: sid.clone(),
            incoming,
            outgoing,
        };
        let session = Session {
            config,
            sid,
            outbox,
            receiver,
            to_app,
            from_app,
            heartbeat,
        };
        (conn, session)
    }

    /// Queues the session's first message (a WebSocket session's `open`).
    pub fn first(&self, open: Bytes) {
        self.outbox.push_text(open);
    }

    /// Runs the session on `transport` to its end; its writer is a task of
    /// `tasks`. `polling` holds its sid if it has one.
    pub async fn run(
        self,
        transport: Transport,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
        polling: &Registry,
    ) {
        let Session {
            config,
            sid,
            outbox,
            receiver,
            to_app,
            from_app,
            heartbeat,
        } = self;
        let Transport {
            mut input,
            output,
            engine_sid,
            ..
        } = transport;
        // Its Engine.IO packets are written as they come; the ping timeout
        // bounds a write (a client that reads nothing is given up).
        let receiver = receiver.pace(config.message_pacing);
        let timeout = config.ping_timeout;
        let writer = match output {
            Output::Ws(sink) => tasks.spawn(receiver.run(sink, timeout)),
            Output::Polling { cmds, format } => {
                tasks.spawn(receiver.run_polling(cmds, format, timeout))
            }
        };
        let mut bridge = Bridge {
            outbox: &outbox,
            to_app,
            from_app,
            heartbeat,
        };
        let end = bridge.serve(&mut input, shutdown).await;
        // A POST now finds the session gone; the application, its end.
        drop((input, bridge));
        tracing::debug!(?end, sid, "an Engine.IO session ended");
        let on_socket = match engine_sid.as_deref() {
            None => true,
            Some(sid) => polling.get(sid).is_some_and(|l| l.rules.upgraded()),
        };
        if let Some(sid) = engine_sid.as_deref().filter(|_| end.client_gone()) {
            // The one poll a client's close ended still finds it.
            polling.remove_unless(sid, Link::closed_by_client);
        }
        if on_socket && matches!(end, End::AppClosed | End::Stopped) {
            // Engine.IO's close; a polling writer adds it to its last body.
            outbox.push_text(Bytes::from_static(b"1"));
        }
        outbox.close(close_code(end));
        if tokio::time::timeout(WRITER_GRACE, writer).await.is_err() {
            tracing::debug!("an Engine.IO writer did not finish in time");
        }
    }
}

/// The running session's loop state.
struct Bridge<'a> {
    outbox: &'a Outbox,
    to_app: mpsc::Sender<Frame>,
    from_app: mpsc::Receiver<Frame>,
    heartbeat: Heartbeat,
}

impl Bridge<'_> {
    async fn serve(&mut self, input: &mut Input, shutdown: &CancellationToken) -> End {
        // A client message the application has no room for yet.
        let mut pending: Option<Frame> = None;
        loop {
            let beat = self.heartbeat.deadline();
            tokio::select! {
                _ = shutdown.cancelled() => return End::Stopped,
                _ = self.outbox.closed() => return End::ClosedByServer,
                _ = self.to_app.closed() => return End::AppClosed,
                _ = tokio::time::sleep_until(beat) => match self.heartbeat.due(Instant::now()) {
                    Beat::TimedOut => return End::PingTimeout,
                    Beat::Ping => {
                        if let Some(ping) = self.outbox.framing().ping() {
                            self.outbox.push_text(ping);
                        }
                    }
                    Beat::Nothing => {}
                },
                permit = self.to_app.reserve(), if pending.is_some() => {
                    match (permit, pending.take()) {
                        (Ok(permit), Some(frame)) => permit.send(frame),
                        _ => return End::AppClosed,
                    }
                }
                msg = input.next(), if pending.is_none() => match take(self.outbox, &mut self.heartbeat, msg) {
                    Ok(frame) => pending = frame,
                    Err(end) => return end,
                },
                frame = self.from_app.recv() => match frame {
                    None | Some(Frame::Close) => return End::AppClosed,
                    Some(Frame::Text(t)) => {
                        self.outbox.push_text(message(&t));
                    }
                    Some(Frame::Binary(b)) => {
                        self.outbox.push_binary(b);
                    }
                },
            }
        }
    }
}

/// A message from the client: what goes to the application, if anything,
/// or why the session ends.
fn take(
    outbox: &Outbox,
    heartbeat: &mut Heartbeat,
    msg: Option<Result<Message, WsError>>,
) -> Result<Option<Frame>, End> {
    let packet = match msg {
        Some(Ok(Message::Text(t))) => Packet::from_text(t.as_str()).map_err(|_| End::ParseError)?,
        Some(Ok(Message::Binary(b))) => Packet::Binary(b),
        Some(Ok(Message::Ping(payload))) => {
            outbox.pong(payload);
            return Ok(None);
        }
        Some(Ok(Message::Pong(_) | Message::Frame(_))) => return Ok(None),
        Some(Ok(Message::Close(_))) | None => return Err(End::ClientGone),
        Some(Err(_)) => return Err(End::TransportError),
    };
    Ok(match packet {
        Packet::Pong(_) => {
            heartbeat.heard();
            None
        }
        Packet::Ping(p) => {
            if let Some(pong) = Packet::Pong(p).to_text() {
                outbox.push_text(Bytes::from(pong));
            }
            None
        }
        Packet::Close => return Err(End::ClientClosed),
        Packet::Message(t) => Some(Frame::Text(t)),
        Packet::Binary(b) => Some(Frame::Binary(b)),
        Packet::Open(_) | Packet::Upgrade | Packet::Noop => None,
    })
}

/// Engine.IO's message packet of `text`: `4<text>`.
fn message(text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 1);
    out.put_u8(b'4');
    out.put_slice(text.as_bytes());
    out.freeze()
}
