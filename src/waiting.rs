//! Connections that have not authenticated yet, per sidecar: capped in
//! all (`RTS_MAX_UNAUTHENTICATED`) and per source address
//! (`RTS_MAX_UNAUTHENTICATED_PER_IP`), without ever locking new users out.
//!
//! A session registers itself when it opens without a verified token and
//! leaves once it authenticates or ends. When a cap is full, the *oldest*
//! waiting connection (of that address first, then of all) is closed with
//! 4408 to admit the new one: an attacker who keeps idle sockets open only
//! pushes out its own oldest, and a real user, who authenticates within
//! milliseconds of opening, gets in. A token in the upgrade request (header,
//! query or subprotocol) is verified before the session registers, so such
//! a connection never takes a place here.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::outbox::{CloseCode, Outbox};

/// A place held by one waiting connection; give it back with
/// [`Waiting::leave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

struct Entry {
    ip: IpAddr,
    outbox: Outbox,
}

#[derive(Default)]
struct State {
    next: u64,
    /// Oldest first (tickets increase).
    entries: BTreeMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

pub struct Waiting {
    state: Mutex<State>,
    max: usize,
    max_per_ip: usize,
}

impl Waiting {
    pub fn new(max: usize, max_per_ip: usize) -> Waiting {
        Waiting {
            state: Mutex::new(State::default()),
            max: max.max(1),
            max_per_ip: max_per_ip.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::locks::lock(&self.state)
    }

    /// Registers a connection from `ip`, closing the oldest waiting ones
    /// (4408) that a full cap leaves no room for.
    pub fn admit(&self, ip: IpAddr, outbox: Outbox) -> Ticket {
        let mut evicted = Vec::new();
        let ticket = {
            let mut s = self.lock();
            if s.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
                let oldest = s.entries.iter().find(|(_, e)| e.ip == ip).map(|(t, _)| *t);
                if let Some(t) = oldest {
                    evicted.extend(s.remove(t));
                }
            }
            if s.entries.len() >= self.max {
                let oldest = s.entries.keys().next().copied();
                if let Some(t) = oldest {
                    evicted.extend(s.remove(t));
                }
            }
            s.next += 1;
            let t = s.next;
            s.entries.insert(t, Entry { ip, outbox });
            *s.per_ip.entry(ip).or_default() += 1;
            Ticket(t)
        };
        for outbox in evicted {
            crate::metrics::connection_refused(
                crate::metrics::ConnectionRefused::UnauthenticatedEvicted,
            );
            tracing::info!(conn = %outbox.conn_id, "closing the oldest connection waiting to authenticate (4408) to admit a new one");
            outbox.close(CloseCode::AuthTimeout);
        }
        ticket
    }

    /// Gives the place back (authenticated, or closed).
    pub fn leave(&self, ticket: Ticket) {
        let _ = self.lock().remove(ticket.0);
    }

    /// Connections waiting now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn remove(&mut self, ticket: u64) -> Option<Outbox> {
        let entry = self.entries.remove(&ticket)?;
        if let Some(n) = self.per_ip.get_mut(&entry.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&entry.ip);
            }
        }
        Some(entry.outbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::outbox;

    fn conn(n: u32) -> (Outbox, crate::outbox::OutboxReceiver) {
        outbox(
            format!("c{n}").into(),
            &crate::protocol::framing::WS_JSON,
            8,
            1024,
        )
    }

    #[test]
    fn a_full_cap_closes_the_oldest_waiting_connection_4408() {
        let w = Waiting::new(2, 10);
        let ip: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let (a, ra) = conn(1);
        let (b, rb) = conn(2);
        let (c, rc) = conn(3);
        let _ta = w.admit(ip, a);
        let tb = w.admit(ip, b);
        let _tc = w.admit(ip, c);
        assert_eq!(ra.close_code(), Some(4408));
        assert_eq!(rb.close_code(), None);
        assert_eq!(rc.close_code(), None);
        assert_eq!(w.len(), 2);
        w.leave(tb);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn one_address_only_pushes_out_its_own_oldest() {
        let w = Waiting::new(100, 2);
        let attacker: IpAddr = IpAddr::from([10, 0, 0, 9]);
        let user: IpAddr = IpAddr::from([10, 0, 0, 1]);
        let (u, ru) = conn(0);
        let _tu = w.admit(user, u);
        let mut receivers = Vec::new();
        for n in 1..=5 {
            let (o, r) = conn(n);
            let _ = w.admit(attacker, o);
            receivers.push(r);
        }
        assert_eq!(ru.close_code(), None, "the user's socket stays");
        let closed = receivers
            .iter()
            .filter(|r| r.close_code().is_some())
            .count();
        assert_eq!(closed, 3);
        assert_eq!(w.len(), 3);
    }
}
