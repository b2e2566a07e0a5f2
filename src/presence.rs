//! Presence rules that live in the sidecar: cursor, selection, editing
//! and viewport coalescing (latest wins, at most 20 per second per user,
//! table and kind), the
//! grace period before `user_left`, and the fleet-wide sweeper of stale
//! presence. The state itself lives in Redis (see `store::presence`).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::config::Config;
use crate::store::presence::{self, Touch};
use crate::store::Store;

/// Shortest interval between two relayed cursor (or selection) updates of
/// one connection on one table: 20 per second.
pub const MIN_RELAY_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Slot {
    last_sent: Option<Instant>,
    pending: Option<Value>,
}

/// Coalesces a connection's cursor and selection updates per table.
#[derive(Default)]
pub struct Coalescer {
    slots: HashMap<(String, TouchKey), Slot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TouchKey {
    Cursor,
    Selection,
    /// v1.3: editing starts and stops share one slot (the latest wins).
    Editing,
    Viewport,
}

fn key(kind: Touch) -> TouchKey {
    match kind {
        Touch::Selection => TouchKey::Selection,
        Touch::Editing => TouchKey::Editing,
        Touch::Viewport => TouchKey::Viewport,
        Touch::Cursor | Touch::Heartbeat => TouchKey::Cursor,
    }
}

fn touch(key: TouchKey) -> Touch {
    match key {
        TouchKey::Cursor => Touch::Cursor,
        TouchKey::Selection => Touch::Selection,
        TouchKey::Editing => Touch::Editing,
        TouchKey::Viewport => Touch::Viewport,
    }
}

impl Coalescer {
    /// Offers an update; returns it when it may be relayed now, or keeps it
    /// (replacing any older pending one) until [`Coalescer::take_due`].
    pub fn offer(&mut self, table: &str, kind: Touch, value: Value, now: Instant) -> Option<Value> {
        let slot = self.slots.entry((table.to_owned(), key(kind))).or_default();
        match slot.last_sent {
            Some(last) if now < last + MIN_RELAY_INTERVAL => {
                slot.pending = Some(value);
                None
            }
            _ => {
                slot.last_sent = Some(now);
                slot.pending = None;
                Some(value)
            }
        }
    }

    /// When the earliest pending update is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| s.pending.is_some())
            .filter_map(|s| s.last_sent.map(|l| l + MIN_RELAY_INTERVAL))
            .min()
    }

    /// Pending updates due at `now`: (table, kind, value).
    pub fn take_due(&mut self, now: Instant) -> Vec<(String, Touch, Value)> {
        let mut due = Vec::new();
        for ((table, k), slot) in self.slots.iter_mut() {
            let ready = slot.last_sent.is_none_or(|l| now >= l + MIN_RELAY_INTERVAL);
            if ready {
                if let Some(v) = slot.pending.take() {
                    slot.last_sent = Some(now);
                    due.push((table.clone(), touch(*k), v));
                }
            }
        }
        due
    }

    /// Keeps an update that may not go out now (the user's own slot is
    /// taken, see [`UserRelayGate`]): it becomes pending and due one
    /// interval from now, replacing any older pending one.
    pub fn defer(&mut self, table: &str, kind: Touch, value: Value, now: Instant) {
        let slot = self.slots.entry((table.to_owned(), key(kind))).or_default();
        slot.last_sent = Some(now);
        slot.pending = Some(value);
    }

    /// Drops the table's slots (after unsubscribe).
    pub fn forget(&mut self, table: &str) {
        self.slots.retain(|(t, _), _| t != table);
    }
}

/// The same 20-per-second relay bound per *user* and table on this
/// sidecar, over all of the user's connections: eight sockets of one user
/// cannot send a victim eight times the cursor rate. Shared by the
/// sessions; an update whose slot is taken waits in its connection's
/// [`Coalescer`] (latest wins).
#[derive(Default)]
pub struct UserRelayGate {
    last: std::sync::Mutex<HashMap<(String, String, TouchKey), Instant>>,
}

/// Entries kept before old ones are pruned.
const GATE_PRUNE_AT: usize = 10_000;

impl UserRelayGate {
    /// True (and the slot taken) when `user` may relay a `kind` update on
    /// `table` now.
    pub fn allow(&self, user: &str, table: &str, kind: Touch, now: Instant) -> bool {
        let mut last = crate::locks::lock(&self.last);
        if last.len() >= GATE_PRUNE_AT {
            last.retain(|_, t| now.saturating_duration_since(*t) < MIN_RELAY_INTERVAL);
        }
        let slot = last
            .entry((user.to_owned(), table.to_owned(), key(kind)))
            .or_insert(now - MIN_RELAY_INTERVAL);
        if now.saturating_duration_since(*slot) < MIN_RELAY_INTERVAL {
            return false;
        }
        *slot = now;
        true
    }
}

/// The pending editing-expiry checks of this sidecar (v1.3): one per user
/// and table, however often the indicator is renewed. Each relayed start
/// moves its check's deadline; the one task waiting on it sleeps again
/// until the last deadline passes, then checks once. A task per start
/// would keep 100 tasks per user and table alive at 20 renewals a second
/// and make each renewal cost a second Redis call.
#[derive(Default)]
pub struct EditingExpiries {
    due: std::sync::Mutex<HashMap<(String, String), Instant>>,
}

impl EditingExpiries {
    /// Sets the check of `user`'s indicator on `table` to `at`; true when
    /// none was pending (the caller starts the task that waits for it).
    pub fn schedule(&self, user: &str, table: &str, at: Instant) -> bool {
        let mut due = crate::locks::lock(&self.due);
        due.insert((user.to_owned(), table.to_owned()), at)
            .is_none()
    }

    /// When to wake next, or `None` when the check is due now (it is no
    /// longer pending: a later start schedules a new one).
    pub fn next_wake(&self, user: &str, table: &str, now: Instant) -> Option<Instant> {
        let mut due = crate::locks::lock(&self.due);
        let key = (user.to_owned(), table.to_owned());
        match due.get(&key) {
            Some(at) if *at > now => Some(*at),
            _ => {
                due.remove(&key);
                None
            }
        }
    }
}

/// How the sweeper runs.
#[derive(Clone, Copy, Debug)]
pub struct SweepSettings {
    pub ttl: Duration,
    pub grace: Duration,
    pub interval: Duration,
}

impl SweepSettings {
    pub fn from_config(config: &Config) -> SweepSettings {
        let ttl = config.presence_ttl;
        SweepSettings {
            ttl,
            grace: config.presence_grace,
            // Often enough that stale presence goes within about a quarter
            // of the TTL past it; never busier than twice a second.
            interval: (ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(10)),
        }
    }
}

/// One sweep over every table with presence (gone sidecars' connections,
/// then stale users). `liveness` caches which sidecars still announce
/// themselves for the rest of the janitor's pass.
pub async fn sweep(
    store: &Store,
    settings: SweepSettings,
    liveness: &mut crate::store::groups::Liveness,
) -> Result<u64, crate::store::StoreError> {
    presence::sweep_all(
        store,
        settings.ttl.as_millis() as u64,
        settings.grace.as_millis() as u64,
        liveness,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_update_goes_out_and_a_quick_second_waits() {
        let mut c = Coalescer::default();
        let t0 = Instant::now();
        assert_eq!(c.offer("t", Touch::Cursor, json!(1), t0), Some(json!(1)));
        assert_eq!(
            c.offer("t", Touch::Cursor, json!(2), t0 + Duration::from_millis(10)),
            None
        );
        assert_eq!(
            c.offer("t", Touch::Cursor, json!(3), t0 + Duration::from_millis(20)),
            None
        );
        assert_eq!(c.next_due(), Some(t0 + MIN_RELAY_INTERVAL));
        assert!(c.take_due(t0 + Duration::from_millis(30)).is_empty());
        let due = c.take_due(t0 + MIN_RELAY_INTERVAL);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].2, json!(3), "latest wins");
        assert_eq!(c.next_due(), None);
    }

    #[test]
    fn cursor_and_selection_and_tables_are_throttled_apart() {
        let mut c = Coalescer::default();
        let t0 = Instant::now();
        assert!(c.offer("t", Touch::Cursor, json!(1), t0).is_some());
        assert!(c.offer("t", Touch::Selection, json!(1), t0).is_some());
        assert!(c.offer("u", Touch::Cursor, json!(1), t0).is_some());
    }

    #[test]
    fn a_renewed_editing_check_keeps_one_waiter_that_wakes_at_the_last_deadline() {
        let e = EditingExpiries::default();
        let t0 = Instant::now();
        let (first, later) = (t0 + Duration::from_secs(5), t0 + Duration::from_secs(6));
        assert!(
            e.schedule("u", "t", first),
            "the first start starts a waiter"
        );
        assert!(!e.schedule("u", "t", later), "a renewal moves it");
        assert_eq!(e.next_wake("u", "t", first), Some(later));
        assert_eq!(e.next_wake("u", "t", later), None, "due: checked once");
        assert!(
            e.schedule("u", "t", later),
            "a start after the check waits anew"
        );
    }

    #[test]
    fn forgetting_a_table_drops_its_pending_updates() {
        let mut c = Coalescer::default();
        let t0 = Instant::now();
        c.offer("t", Touch::Cursor, json!(1), t0);
        c.offer("t", Touch::Cursor, json!(2), t0);
        c.forget("t");
        assert_eq!(c.next_due(), None);
    }
}
