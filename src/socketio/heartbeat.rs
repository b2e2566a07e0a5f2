//! Engine.IO's heartbeat, as one timing state machine for every Engine.IO
//! session (rtsync's `/socket.io/` through `session::liveness`, and the
//! standalone layer's sessions): the first ping `pingInterval` after the
//! open, then one every `pingInterval`; a pong (or, for rtsync, anything
//! the client sends) must come within `pingTimeout` of the ping's due time,
//! else the session is gone: a silent client is closed at `pingInterval +
//! pingTimeout` after the last thing it sent. The caller owns the clock:
//! it sleeps until [`Heartbeat::deadline`] and then asks what is due.

use std::time::Duration;

use tokio::time::Instant;

/// What is due at a heartbeat's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Send a ping now.
    Ping,
    /// The last ping was not answered in time: the session is gone.
    TimedOut,
    /// Nothing yet (woken early).
    Nothing,
}

#[derive(Debug, Clone)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    pong_due: Option<Instant>,
}

impl Heartbeat {
    /// The heartbeat of a session opened at `opened`.
    pub fn new(interval: Duration, timeout: Duration, opened: Instant) -> Heartbeat {
        Heartbeat {
            interval,
            timeout,
            next_ping: opened + interval,
            pong_due: None,
        }
    }

    /// When something is next due (a ping, or a pong's deadline).
    pub fn deadline(&self) -> Instant {
        match self.pong_due {
            Some(due) => due.min(self.next_ping),
            None => self.next_ping,
        }
    }

    /// When a client that sends nothing is gone: the pong of the ping due
    /// next (or of the one sent) is late then. A session that has not
    /// started reading its client (a long-polling handshake never polled)
    /// is gone by this time.
    pub fn silent_deadline(&self) -> Instant {
        self.pong_due.unwrap_or(self.next_ping + self.timeout)
    }

    /// When the answer to the last ping is late, if one is awaited.
    pub fn pong_due(&self) -> Option<Instant> {
        self.pong_due
    }

    /// What is due at `now`. A ping is sent for its due time: the pong is
    /// due `pingTimeout` after that, however late the caller woke. A session
    /// that starts late (a long-polling one polled long after its
    /// handshake) pings once, not once per missed interval.
    pub fn due(&mut self, now: Instant) -> Beat {
        if self.pong_due.is_some_and(|due| now >= due) {
            return Beat::TimedOut;
        }
        if now < self.next_ping {
            return Beat::Nothing;
        }
        let at = self.next_ping;
        self.pong_due.get_or_insert(at + self.timeout);
        self.next_ping = (at + self.interval).max(now);
        Beat::Ping
    }

    /// The client answered: no pong is awaited any more.
    pub fn heard(&mut self) {
        self.pong_due = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_ping_is_due_an_interval_after_the_open() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(300 * MS, 200 * MS, t0);
        assert_eq!(hb.deadline(), t0 + 300 * MS);
        assert_eq!(hb.due(t0 + 299 * MS), Beat::Nothing);
        assert_eq!(hb.due(t0 + 300 * MS), Beat::Ping);
        assert_eq!(hb.pong_due(), Some(t0 + 500 * MS));
    }

    #[test]
    fn a_silent_client_is_gone_an_interval_and_a_timeout_after_the_open() {
        let t0 = Instant::now();
        let hb = Heartbeat::new(300 * MS, 200 * MS, t0);
        assert_eq!(hb.silent_deadline(), t0 + 500 * MS);
    }

    #[test]
    fn a_ping_unanswered_for_the_timeout_ends_the_session() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(300 * MS, 200 * MS, t0);
        // Woken late: the pong is still due a timeout after the ping's time.
        assert_eq!(hb.due(t0 + 350 * MS), Beat::Ping);
        assert_eq!(hb.deadline(), t0 + 500 * MS);
        assert_eq!(hb.due(t0 + 500 * MS), Beat::TimedOut);
    }

    #[test]
    fn an_answer_clears_the_deadline_and_pings_go_on() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(300 * MS, 200 * MS, t0);
        assert_eq!(hb.due(t0 + 300 * MS), Beat::Ping);
        hb.heard();
        assert_eq!(hb.deadline(), t0 + 600 * MS);
        assert_eq!(hb.due(t0 + 600 * MS), Beat::Ping);
    }

    #[test]
    fn a_late_start_pings_once_and_past_the_timeout_is_gone() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(300 * MS, 200 * MS, t0);
        // Started between the interval and interval + timeout: one ping.
        assert_eq!(hb.due(t0 + 450 * MS), Beat::Ping);
        assert_eq!(hb.due(t0 + 460 * MS), Beat::Nothing);
        assert_eq!(hb.deadline(), t0 + 500 * MS);
        // Started later than that: silent for too long already.
        let mut late = Heartbeat::new(300 * MS, 200 * MS, t0);
        assert_eq!(late.due(t0 + 2000 * MS), Beat::Ping);
        assert_eq!(late.due(t0 + 2000 * MS), Beat::TimedOut);
    }
}
