//! Whether the peer is still there. On `/ws` the server sends WebSocket
//! pings every 25 s and drops a peer silent for 60 s. A framing with pings
//! of its own (Socket.IO's Engine.IO `2`/`3`) runs Engine.IO's one
//! heartbeat (`socketio::heartbeat`, the standalone layer's too): a ping every
//! `pingInterval` from the connection's open (for a long-polling session,
//! its handshake: the first ping is never sooner), and a connection that
//! sends nothing within `pingTimeout` of a ping's time is closed: an
//! abandoned long-polling session is freed then, at most `pingInterval +
//! pingTimeout` after the last thing it sent.

use std::time::Duration;

use tokio::time::Instant;

use super::Session;
use crate::config::Config;
use crate::protocol::framing::Heartbeat as FramingHeartbeat;
use crate::protocol::{Framing, SessionEnd};
use crate::socketio::heartbeat::{Beat, Heartbeat};

/// How often the server pings on `/ws`; a peer silent for [`IDLE_TIMEOUT`]
/// is dropped.
const PING_INTERVAL: Duration = Duration::from_secs(25);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The connection's heartbeat: WebSocket pings on `/ws`, Engine.IO's own
/// ([`Heartbeat`]) for a framing with pings of its own.
pub enum Liveness {
    Ws {
        next_ping: Instant,
        last_heard: Instant,
    },
    Engine(Heartbeat),
}

/// The heartbeat a framing announces (Engine.IO's handshake).
pub fn heartbeat(config: &Config, upgrades: bool) -> FramingHeartbeat {
    FramingHeartbeat {
        interval: config.socketio_ping_interval.max(Duration::from_millis(1)),
        timeout: config.socketio_ping_timeout.max(Duration::from_millis(1)),
        max_payload: config.max_frame_bytes.get(),
        upgrades,
    }
}

impl Liveness {
    /// The heartbeat of a connection that opened at `opened`.
    pub fn new(framing: &dyn Framing, config: &Config, opened: Instant) -> Liveness {
        if framing.ping().is_none() {
            return Liveness::Ws {
                next_ping: opened + PING_INTERVAL,
                last_heard: opened,
            };
        }
        let hb = heartbeat(config, false);
        Liveness::Engine(Heartbeat::new(hb.interval, hb.timeout, opened))
    }

    /// A message arrived: the peer is there.
    pub fn heard(&mut self) {
        match self {
            Liveness::Ws { last_heard, .. } => *last_heard = Instant::now(),
            Liveness::Engine(hb) => hb.heard(),
        }
    }

    /// When something is next due.
    pub fn deadline(&self) -> Instant {
        match self {
            Liveness::Ws { next_ping, .. } => *next_ping,
            Liveness::Engine(hb) => hb.deadline(),
        }
    }

    /// Does what is due now; how the connection ends, if it does.
    pub fn on_deadline(&mut self, session: &Session) -> Option<SessionEnd> {
        let now = Instant::now();
        match self {
            Liveness::Ws {
                next_ping,
                last_heard,
            } => {
                if now < *next_ping {
                    return None;
                }
                if last_heard.elapsed() > IDLE_TIMEOUT {
                    return Some(SessionEnd::PeerSilent);
                }
                session.outbox.ping();
                *next_ping = now + PING_INTERVAL;
                None
            }
            Liveness::Engine(hb) => match hb.due(now) {
                Beat::TimedOut => Some(SessionEnd::PingTimeout),
                Beat::Ping => {
                    if let Some(ping) = session.framing().ping() {
                        session.outbox.push_text(ping);
                    }
                    None
                }
                Beat::Nothing => None,
            },
        }
    }
}
