//! Whether the peer is still there. On `/ws` the server sends WebSocket
//! pings every 25 s and drops a peer silent for 60 s. A framing with pings
//! of its own (Socket.IO's Engine.IO `2`/`3`) pings every
//! `pingInterval` from the connection's open (for a long-polling session,
//! its handshake: the first ping is never sooner), and a connection that
//! sends nothing within `pingTimeout` of a ping's time is closed: an
//! abandoned long-polling session is freed then, at most `pingInterval +
//! pingTimeout` after the last thing it sent.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::Session;
use crate::config::Config;
use crate::protocol::framing::Heartbeat;
use crate::protocol::Framing;

/// How often the server pings on `/ws`; a peer silent for [`IDLE_TIMEOUT`]
/// is dropped.
const PING_INTERVAL: Duration = Duration::from_secs(25);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Liveness {
    pings: Interval,
    own_ping: bool,
    pong_timeout: Duration,
    last_heard: Instant,
    pong_due: Option<Instant>,
}

/// The heartbeat a framing announces (Engine.IO's handshake).
pub fn heartbeat(config: &Config, upgrades: bool) -> Heartbeat {
    Heartbeat {
        interval: Duration::from_millis(config.socketio_ping_interval_ms.max(1)),
        timeout: Duration::from_millis(config.socketio_ping_timeout_ms.max(1)),
        max_payload: config.max_frame_bytes,
        upgrades,
    }
}

impl Liveness {
    /// The heartbeat of a connection that opened at `opened`.
    pub fn new(framing: &dyn Framing, config: &Config, opened: Instant) -> Liveness {
        let own_ping = framing.ping().is_some();
        let hb = heartbeat(config, false);
        let interval = if own_ping { hb.interval } else { PING_INTERVAL };
        let mut pings = tokio::time::interval_at(opened + interval, interval);
        // A session that starts late (a long-polling one polled long after
        // its handshake) pings once, not once per missed interval.
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Liveness {
            pings,
            own_ping,
            pong_timeout: hb.timeout,
            last_heard: opened,
            pong_due: None,
        }
    }

    /// A message arrived: the peer is there.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.pong_due = None;
    }

    /// When the answer to the last ping is late, if one is awaited.
    pub fn pong_due(&self) -> Option<Instant> {
        self.pong_due
    }

    /// The next ping's time (when it was due, which may have passed).
    pub async fn tick(&mut self) -> Instant {
        self.pings.tick().await
    }

    /// Pings the peer for the ping due `at`; false when it has been silent
    /// too long already. The answer is due `pingTimeout` after `at`.
    pub fn ping(&mut self, session: &Session, at: Instant) -> bool {
        if !self.own_ping {
            if self.last_heard.elapsed() > IDLE_TIMEOUT {
                return false;
            }
            session.outbox.ping();
            return true;
        }
        if let Some(ping) = session.framing().ping() {
            session.outbox.push_text(ping);
        }
        self.pong_due.get_or_insert(at + self.pong_timeout);
        true
    }
}
