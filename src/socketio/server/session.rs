//! One Engine.IO session of the standalone server: a task that owns the
//! session's state and is the only one to write to its client.
//!
//! ```text
//! HTTP GET/POST, upgrade ──Cmd──▶ driver ──Frame──▶ the application (Conn)
//!                     WebSocket ◀──▶ driver ◀──Frame── the application
//! ```
//!
//! The driver queues the application's frames as Engine.IO packets and
//! answers the parked polling GET with them (at most `maxPayload` bytes a
//! body), or writes them to the WebSocket once there is one. It pings every
//! `pingInterval` and closes the session when the pong is `pingTimeout`
//! late, which also frees a polling session nobody polls any more.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::Config;
use crate::socketio::engine::{self, Packet};
use crate::socketio::heartbeat::{Beat, Heartbeat};

/// The WebSocket of a session.
pub type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

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

/// What the HTTP side asks of a session's driver.
pub enum Cmd {
    /// A polling GET: answered with the next body.
    Get(oneshot::Sender<Bytes>),
    /// A packet from a polling POST.
    Packet(Packet),
    /// The upgrade's probe succeeded: the parked GET gets a no-op.
    Probe,
    /// The upgrade completed: from now on the session uses this socket.
    Upgrade(Box<Ws>),
    /// Close the session (it broke the transport's rules).
    Close,
}

/// Packets queued for a client that does not read: past this many, or
/// past `MAX_QUEUED_PAYLOADS` × maxPayload bytes, the client is a slow
/// consumer and its session is closed.
const MAX_QUEUED: usize = 1024;
const MAX_QUEUED_PAYLOADS: usize = 4;

/// Packets waiting (for the client, or for the application), and their
/// bytes.
#[derive(Default)]
struct Queue {
    packets: VecDeque<Packet>,
    bytes: usize,
}

fn size(p: &Packet) -> usize {
    match p {
        Packet::Message(t) | Packet::Open(t) | Packet::Ping(t) | Packet::Pong(t) => t.len() + 1,
        Packet::Binary(b) => b.len(),
        Packet::Close | Packet::Upgrade | Packet::Noop => 1,
    }
}

impl Queue {
    fn push_back(&mut self, p: Packet) {
        self.bytes += size(&p);
        self.packets.push_back(p);
    }

    fn pop_front(&mut self) -> Option<Packet> {
        let p = self.packets.pop_front()?;
        self.bytes -= size(&p);
        Some(p)
    }

    fn front(&self) -> Option<&Packet> {
        self.packets.front()
    }

    fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    fn too_much(&self, max_payload: usize) -> bool {
        self.packets.len() > MAX_QUEUED
            || self.bytes > MAX_QUEUED_PAYLOADS.saturating_mul(max_payload)
    }
}

/// Messages buffered from the application to a session (it drains them
/// at once), and from a session to its application.
pub const APP_QUEUE: usize = 256;
const TO_APP_QUEUE: usize = 16;

/// Why a session ended (logged).
#[derive(Debug)]
enum End {
    Closed,
    /// The client sent Engine.IO's close packet: a parked GET ends with a
    /// no-op, as the protocol's suite expects.
    ClientClosed,
    PingTimeout,
    SlowConsumer,
    TransportError,
    ParseError,
    Shutdown,
}

pub struct Driver {
    config: Config,
    cmds: mpsc::Receiver<Cmd>,
    to_app: mpsc::Sender<Frame>,
    from_app: mpsc::Receiver<Frame>,
    queue: Queue,
    /// The client's messages not yet taken by the application: while it
    /// holds as much as the outgoing queue may, the client is not read (it
    /// waits).
    inbox: Queue,
    parked: Option<oneshot::Sender<Bytes>>,
    ws_tx: Option<SplitSink<Ws, Message>>,
    ws_rx: Option<SplitStream<Ws>>,
    /// Engine.IO's heartbeat (the one rtsync's sessions run too), from
    /// the session's open.
    heartbeat: Heartbeat,
    /// A WebSocket probe succeeded: GETs are answered with a no-op until
    /// the upgrade completes.
    probing: bool,
}

impl Driver {
    /// A session's driver and its application's side. A WebSocket-only
    /// session starts with its socket; a polling one gets it at the upgrade.
    pub fn new(
        config: Config,
        sid: String,
        cmds: mpsc::Receiver<Cmd>,
        ws: Option<Ws>,
    ) -> (Driver, Conn) {
        // Small: each message may be maxPayload bytes; the inbox holds
        // the rest, bounded in bytes.
        let (to_app, incoming) = mpsc::channel(TO_APP_QUEUE);
        let (outgoing, from_app) = mpsc::channel(APP_QUEUE);
        let (ws_tx, ws_rx) = match ws.map(StreamExt::split) {
            Some((tx, rx)) => (Some(tx), Some(rx)),
            None => (None, None),
        };
        let handshake = engine::Handshake {
            sid: sid.clone(),
            upgrades: if ws_tx.is_some() {
                Vec::new()
            } else {
                vec!["websocket"]
            },
            ping_interval: config.ping_interval.as_millis() as u64,
            ping_timeout: config.ping_timeout.as_millis() as u64,
            max_payload: config.max_payload,
        };
        let (config_interval, config_timeout) = (config.ping_interval, config.ping_timeout);
        let mut driver = Driver {
            config,
            cmds,
            to_app,
            from_app,
            queue: Queue::default(),
            inbox: Queue::default(),
            parked: None,
            ws_tx,
            ws_rx,
            heartbeat: Heartbeat::new(config_interval, config_timeout, Instant::now()),
            probing: false,
        };
        driver.queue.push_back(handshake.packet());
        let conn = Conn {
            sid,
            incoming,
            outgoing,
        };
        (driver, conn)
    }

    /// Runs the session to its end.
    pub async fn run(mut self, shutdown: tokio_util::sync::CancellationToken) {
        let end = self.drive(shutdown).await;
        tracing::debug!(?end, "an Engine.IO session ended");
        if matches!(end, End::Closed | End::Shutdown) {
            self.queue.push_back(Packet::Close);
        }
        if let Some(tx) = self.parked.take() {
            let body = if matches!(end, End::ClientClosed) {
                Bytes::from_static(b"6")
            } else {
                self.body()
            };
            let _ = tx.send(body);
        }
        if matches!(end, End::TransportError) {
            // The socket takes nothing: dropping it is the close.
            return;
        }
        let _ = self.flush().await;
        if let Some(tx) = self.ws_tx.as_mut() {
            let _ = tokio::time::timeout(self.config.ping_timeout, tx.close()).await;
        }
    }

    async fn drive(&mut self, shutdown: tokio_util::sync::CancellationToken) -> End {
        let to_app = self.to_app.clone();
        if self.flush().await.is_err() {
            return End::TransportError;
        }
        loop {
            let timer = self.heartbeat.deadline();
            let reading = !self.inbox.too_much(self.config.max_payload);
            tokio::select! {
                _ = shutdown.cancelled() => return End::Shutdown,
                _ = to_app.closed() => return End::Closed,
                _ = tokio::time::sleep_until(timer) => match self.heartbeat.due(Instant::now()) {
                    Beat::TimedOut => return End::PingTimeout,
                    Beat::Ping => self.queue.push_back(Packet::Ping(String::new())),
                    Beat::Nothing => {}
                },
                permit = to_app.reserve(), if !self.inbox.is_empty() => match permit {
                    Ok(permit) => {
                        match self.inbox.pop_front() {
                            Some(Packet::Binary(b)) => permit.send(Frame::Binary(b)),
                            Some(Packet::Message(t)) => permit.send(Frame::Text(t)),
                            _ => {}
                        }
                    }
                    Err(_) => return End::Closed,
                },
                cmd = self.cmds.recv(), if reading => match cmd {
                    None | Some(Cmd::Close) => return End::Closed,
                    Some(Cmd::Get(tx)) if self.probing => {
                        let _ = tx.send(Bytes::from_static(b"6"));
                    }
                    Some(Cmd::Get(tx)) => self.parked = Some(tx),
                    Some(Cmd::Packet(p)) => {
                        if let Some(end) = self.take_from_client(p) {
                            return end;
                        }
                    }
                    Some(Cmd::Probe) => {
                        self.probing = true;
                        if let Some(tx) = self.parked.take() {
                            let _ = tx.send(Bytes::from_static(b"6"));
                        }
                    }
                    Some(Cmd::Upgrade(ws)) => {
                        let (tx, rx) = (*ws).split();
                        self.ws_tx = Some(tx);
                        self.ws_rx = Some(rx);
                        if let Some(tx) = self.parked.take() {
                            let _ = tx.send(Bytes::from_static(b"6"));
                        }
                    }
                },
                msg = next_ws(&mut self.ws_rx), if reading => {
                    let packet = match msg {
                        Some(Ok(Message::Text(t))) => match Packet::from_text(t.as_str()) {
                            Ok(p) => p,
                            Err(_) => return End::ParseError,
                        },
                        Some(Ok(Message::Binary(b))) => Packet::Binary(b),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Close(_))) | None => return End::Closed,
                        Some(Err(_)) => return End::TransportError,
                    };
                    if let Some(end) = self.take_from_client(packet) {
                        return end;
                    }
                }
                frame = self.from_app.recv() => match frame {
                    None | Some(Frame::Close) => return End::Closed,
                    Some(Frame::Text(t)) => self.queue.push_back(Packet::Message(t)),
                    Some(Frame::Binary(b)) => self.queue.push_back(Packet::Binary(b)),
                },
            }
            if self.queue.too_much(self.config.max_payload) {
                return End::SlowConsumer;
            }
            if self.flush().await.is_err() {
                return End::TransportError;
            }
        }
    }

    /// A packet from the client; `Some` when it ends the session.
    fn take_from_client(&mut self, packet: Packet) -> Option<End> {
        match packet {
            Packet::Pong(_) => self.heartbeat.heard(),
            Packet::Ping(p) => self.queue.push_back(Packet::Pong(p)),
            Packet::Close => return Some(End::ClientClosed),
            p @ (Packet::Message(_) | Packet::Binary(_)) => self.inbox.push_back(p),
            Packet::Open(_) | Packet::Upgrade | Packet::Noop => {}
        }
        None
    }

    /// Sends what is queued: on the WebSocket, or as the parked GET's body.
    /// A WebSocket that takes no bytes for a ping timeout is given up
    /// (the driver would otherwise wait on it, past every deadline).
    async fn flush(&mut self) -> Result<(), ()> {
        if let Some(tx) = self.ws_tx.as_mut() {
            let queue = &mut self.queue;
            let pacing = self.config.message_pacing;
            let write = async move {
                // One write per message; with pacing, a pause after each,
                // so that a client taking one message per read (the
                // protocols' own suites do) never finds two in one.
                while let Some(p) = queue.pop_front() {
                    let msg = match p {
                        Packet::Binary(b) => Message::Binary(b),
                        p => Message::Text(p.to_text().unwrap_or_default().into()),
                    };
                    tx.send(msg).await?;
                    if let Some(pause) = pacing {
                        tokio::time::sleep(pause).await;
                    }
                }
                Ok::<(), tokio_tungstenite::tungstenite::Error>(())
            };
            return match tokio::time::timeout(self.config.ping_timeout, write).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) | Err(_) => Err(()),
            };
        }
        if !self.queue.is_empty() {
            if let Some(tx) = self.parked.take() {
                let _ = tx.send(self.body());
            }
        }
        Ok(())
    }

    /// The next polling body: queued packets up to `maxPayload` bytes (at
    /// least one), separated by `\x1e`.
    fn body(&mut self) -> Bytes {
        let mut out = String::new();
        while let Some(p) = self.queue.front() {
            let part = p.to_polling();
            if !out.is_empty() && out.len() + 1 + part.len() > self.config.max_payload {
                break;
            }
            if !out.is_empty() {
                out.push(engine::SEPARATOR);
            }
            out.push_str(&part);
            self.queue.pop_front();
        }
        if out.is_empty() {
            // Nothing to say (the session is closing): a no-op.
            out.push('6');
        }
        Bytes::from(out)
    }
}

async fn next_ws(
    rx: &mut Option<SplitStream<Ws>>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match rx {
        Some(rx) => rx.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_counts_its_bytes_and_is_too_much_past_either_bound() {
        let mut q = Queue::default();
        q.push_back(Packet::Message("x".repeat(999)));
        q.push_back(Packet::Binary(Bytes::from_static(&[1, 2, 3])));
        assert_eq!(q.bytes, 1000 + 3);
        assert!(!q.too_much(1000));
        q.push_back(Packet::Message("y".repeat(3000)));
        assert!(q.too_much(1000), "over 4 x maxPayload bytes");
        assert!(q.pop_front().is_some());
        assert_eq!(q.bytes, 3 + 3001);
        let mut many = Queue::default();
        for _ in 0..=MAX_QUEUED {
            many.push_back(Packet::Noop);
        }
        assert!(many.too_much(1_000_000), "over the packet count");
    }
}
