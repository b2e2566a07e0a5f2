//! Socket.IO v5 over one Engine.IO session of the standalone server, with
//! the default parser: namespaces, CONNECT with its auth payload, events,
//! acks and binary attachments, handed to a small [`Handler`]. This is the
//! application interface: a session ([`super::session`]) hands its
//! client's Engine.IO messages to `Conn.incoming` and queues what comes on
//! `Conn.outgoing` in the connection's outbox (text as `4<packet>`, each
//! attachment as a binary message).
//!
//! ```text
//! Conn.incoming ──▶ run: packet::Packet::decode (+ attachments) ──▶ Handler
//! Handler ──Socket::emit / Ack::send──▶ Conn.outgoing (text packet, then
//!                                        one binary message per attachment)
//! ```
//!
//! A client that joins no namespace within the connect timeout, sends a
//! malformed packet, or sends to a namespace it has not joined is
//! disconnected (the Engine.IO session is closed), as Socket.IO servers do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::session::{Conn, Frame};
use crate::socketio::packet::{self, Kind, Packet};
use crate::socketio::polling::random_id;

/// What an application does with its Socket.IO clients.
pub trait Handler: Send + Sync + 'static {
    /// Whether the namespace exists (a CONNECT to another one gets
    /// CONNECT_ERROR "Invalid namespace").
    fn has_namespace(&self, nsp: &str) -> bool;
    /// A client joined `socket.nsp` with this auth payload (`{}` when it
    /// sent none).
    fn on_connect(&self, socket: &Socket, auth: &Value);
    /// An event; `ack` is the client's callback when it asked for one.
    fn on_event(&self, socket: &Socket, event: &str, args: Args, ack: Option<Ack>);
    /// The client left the namespace, or the connection ended.
    fn on_disconnect(&self, _socket: &Socket) {}
}

/// An event's arguments: JSON values where binary parts are placeholders
/// `{"_placeholder": true, "num": i}` naming `attachments[i]`, as the
/// default parser carries them. Re-emitting them as they are sends the
/// same binaries back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    pub values: Vec<Value>,
    pub attachments: Vec<Bytes>,
}

impl Args {
    /// Plain JSON arguments.
    pub fn json(values: Vec<Value>) -> Args {
        Args {
            values,
            attachments: Vec::new(),
        }
    }
}

/// The session's queue from the application was full (the client does
/// not read, or the session ended): it is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client is gone or does not read")]
pub struct Gone;

/// One client in one namespace.
#[derive(Clone)]
pub struct Socket {
    /// Its Socket.IO id (not the Engine.IO session's).
    pub id: String,
    pub nsp: String,
    out: mpsc::Sender<Frame>,
}

impl Socket {
    /// Emits an event with these arguments.
    pub fn emit(&self, event: &str, args: Args) -> Result<(), Gone> {
        let mut values = Vec::with_capacity(args.values.len() + 1);
        values.push(Value::String(event.to_owned()));
        values.extend(args.values);
        let args = Args {
            values,
            attachments: args.attachments,
        };
        send(&self.out, Kind::Event, &self.nsp, None, args)
    }
}

/// A client's acknowledgement callback.
pub struct Ack {
    id: u64,
    nsp: String,
    out: mpsc::Sender<Frame>,
}

impl Ack {
    /// Calls the client's callback with these arguments.
    pub fn send(self, args: Args) -> Result<(), Gone> {
        send(&self.out, Kind::Ack, &self.nsp, Some(self.id), args)
    }
}

/// One packet, binary when it carries attachments: its text, then each
/// attachment as a binary message.
fn send(
    out: &mpsc::Sender<Frame>,
    kind: Kind,
    nsp: &str,
    id: Option<u64>,
    args: Args,
) -> Result<(), Gone> {
    let binary = !args.attachments.is_empty();
    let kind = match (kind, binary) {
        (Kind::Event, true) => Kind::BinaryEvent,
        (Kind::Ack, true) => Kind::BinaryAck,
        (k, _) => k,
    };
    let mut packet = Packet::new(kind, nsp, id, Some(Value::Array(args.values)));
    packet.attachments = args.attachments.len();
    let fail = |_| {
        let _ = out.try_send(Frame::Close);
        Gone
    };
    out.try_send(Frame::Text(packet.encode())).map_err(fail)?;
    for a in args.attachments {
        out.try_send(Frame::Binary(a)).map_err(fail)?;
    }
    Ok(())
}

/// Socket.IO's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a client may take to join its first namespace.
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(45),
        }
    }
}

/// A binary packet waiting for its attachments.
struct Partial {
    packet: Packet,
    attachments: Vec<Bytes>,
}

static SOCKET_IDS: AtomicU64 = AtomicU64::new(0);

/// Why a connection is dropped (logged).
#[derive(Debug)]
enum Ending {
    ConnectTimeout,
    BadPacket(&'static str),
    NotJoined,
    Ended,
}

/// What one Engine.IO session holds: its sockets by namespace, the binary
/// packet waiting for its attachments, and whether it ever joined (until
/// then the connect timeout runs).
struct Client {
    sockets: HashMap<String, Socket>,
    partial: Option<Partial>,
    joined_once: bool,
}

/// What a message from the client makes: a whole packet (with its
/// attachments), nothing yet, or the end of the connection.
enum Assembled {
    Packet(Packet, Vec<Bytes>),
    Wait,
    End(Ending),
}

/// Serves Socket.IO on one Engine.IO session until it ends.
pub async fn run<H: Handler>(mut conn: Conn, handler: Arc<H>, options: Options) {
    let mut client = Client {
        sockets: HashMap::new(),
        partial: None,
        joined_once: false,
    };
    let connect_deadline = tokio::time::Instant::now() + options.connect_timeout;
    let why = loop {
        let frame = tokio::select! {
            f = conn.incoming.recv() => f,
            _ = tokio::time::sleep_until(connect_deadline), if !client.joined_once => {
                break Ending::ConnectTimeout;
            }
        };
        let (packet, attachments) = match assemble(frame, &mut client.partial) {
            Assembled::Packet(packet, attachments) => (packet, attachments),
            Assembled::Wait => continue,
            Assembled::End(why) => break why,
        };
        let handled = match packet.kind {
            Kind::Connect => connect(&conn.outgoing, &*handler, &mut client, packet),
            Kind::Disconnect => {
                if let Some(socket) = client.sockets.remove(&packet.nsp) {
                    handler.on_disconnect(&socket);
                }
                Ok(())
            }
            Kind::Event | Kind::BinaryEvent => {
                event(&conn.outgoing, &*handler, &client, packet, attachments)
            }
            // Answers to acks the server asked for: it asks for none.
            Kind::Ack | Kind::BinaryAck => Ok(()),
            Kind::ConnectError => Err(Ending::BadPacket("CONNECT_ERROR from a client")),
        };
        if let Err(why) = handled {
            break why;
        }
    };
    match why {
        Ending::BadPacket(reason) => {
            tracing::debug!(reason, "a bad Socket.IO packet; disconnecting the client");
        }
        why => tracing::debug!(?why, "a Socket.IO connection ended"),
    }
    for socket in client.sockets.values() {
        handler.on_disconnect(socket);
    }
    let _ = conn.outgoing.try_send(Frame::Close);
}

/// Adds a message from the client to what is being assembled: a text
/// packet, or the next attachment of the binary packet waiting for them.
fn assemble(frame: Option<Frame>, partial: &mut Option<Partial>) -> Assembled {
    match (frame, partial.as_mut()) {
        (None | Some(Frame::Close), _) => Assembled::End(Ending::Ended),
        (Some(Frame::Binary(b)), Some(p)) => {
            p.attachments.push(b);
            if p.attachments.len() < p.packet.attachments {
                return Assembled::Wait;
            }
            let Some(Partial {
                mut packet,
                attachments,
            }) = partial.take()
            else {
                return Assembled::Wait;
            };
            packet.attachments = 0;
            Assembled::Packet(packet, attachments)
        }
        (Some(Frame::Binary(_)), None) => {
            Assembled::End(Ending::BadPacket("an unexpected attachment"))
        }
        (Some(Frame::Text(_)), Some(_)) => {
            Assembled::End(Ending::BadPacket("a packet before the attachments"))
        }
        (Some(Frame::Text(t)), None) => match Packet::decode(&t) {
            Ok(p) if p.attachments > 0 => {
                // Each attachment named by exactly one placeholder.
                let data = p.data.as_ref().unwrap_or(&Value::Null);
                if let Err(e) = packet::check_placeholders(data, p.attachments) {
                    return Assembled::End(Ending::BadPacket(e.0));
                }
                *partial = Some(Partial {
                    packet: p,
                    attachments: Vec::new(),
                });
                Assembled::Wait
            }
            Ok(p) => Assembled::Packet(p, Vec::new()),
            Err(e) => Assembled::End(Ending::BadPacket(e.0)),
        },
    }
}

/// A CONNECT: the namespace is joined (answered with the socket's id) or,
/// when it does not exist, refused with CONNECT_ERROR.
fn connect<H: Handler>(
    out: &mpsc::Sender<Frame>,
    handler: &H,
    client: &mut Client,
    packet: Packet,
) -> Result<(), Ending> {
    if !handler.has_namespace(&packet.nsp) {
        let p = Packet::new(
            Kind::ConnectError,
            &packet.nsp,
            None,
            Some(json!({"message": "Invalid namespace"})),
        );
        let _ = out.try_send(Frame::Text(p.encode()));
        return Ok(());
    }
    let socket = Socket {
        id: random_id(SOCKET_IDS.fetch_add(1, Ordering::Relaxed)),
        nsp: packet.nsp.clone(),
        out: out.clone(),
    };
    let p = Packet::new(
        Kind::Connect,
        &packet.nsp,
        None,
        Some(json!({ "sid": socket.id })),
    );
    if out.try_send(Frame::Text(p.encode())).is_err() {
        return Err(Ending::Ended);
    }
    client.joined_once = true;
    let auth = packet.data.unwrap_or_else(|| json!({}));
    handler.on_connect(&socket, &auth);
    client.sockets.insert(packet.nsp, socket);
    Ok(())
}

/// An event (binary or not) to a joined namespace, handed to the handler
/// with its name, arguments and the client's ack callback if it asked.
fn event<H: Handler>(
    out: &mpsc::Sender<Frame>,
    handler: &H,
    client: &Client,
    packet: Packet,
    attachments: Vec<Bytes>,
) -> Result<(), Ending> {
    let Some(socket) = client.sockets.get(&packet.nsp) else {
        return Err(Ending::NotJoined);
    };
    let mut values = match packet.data {
        Some(Value::Array(values)) => values,
        _ => Vec::new(),
    };
    let name = if values.is_empty() {
        String::new()
    } else {
        match values.remove(0) {
            Value::String(s) => s,
            other => other.to_string(),
        }
    };
    let ack = packet.id.map(|id| Ack {
        id,
        nsp: packet.nsp.clone(),
        out: out.clone(),
    });
    let args = Args {
        values,
        attachments,
    };
    handler.on_event(socket, &name, args, ack);
    Ok(())
}
