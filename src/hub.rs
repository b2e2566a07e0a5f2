//! The hub: which local connections subscribe to which table, and the
//! fan-out of stream events to them.
//!
//! Data flow: the tailer hands [`Hub::deliver`] the events it read for a
//! table, in stream order. The hub encodes the frame once per wire encoding
//! and pushes the same `Bytes` into every subscriber's bounded [`Outbox`].
//! A subscriber that made some of the events gets a frame without them (its
//! own writes were answered by `ack`); that frame reuses each event's cached
//! bytes, so nothing is encoded twice.
//!
//! Each table keeps a cursor: the id of the last event fanned out. A new
//! subscriber is registered under the same lock that advances it, so "every
//! event after `lastEventId`" is exact. The first subscriber of a table
//! starts serving it (consumer group placed at the stream's end, tailer
//! told); the last one leaving stops it. Both run under one lifecycle lock so
//! a quick unsubscribe/subscribe never races the group's removal.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use crate::protocol::codec::encode_frame;
use crate::protocol::event::{bounded_groups, list_frame, single_frame, ChangeEvent};
use crate::protocol::Encoding;
use crate::session::outbox::Outbox;
use crate::store::groups::{self, parse_id};
use crate::store::presence_bus::{Notice, PresenceBus};
use crate::store::tailer::TailerHandle;
use crate::store::{Store, StoreError};

pub struct Hub {
    tables: RwLock<HashMap<Arc<str>, Arc<Table>>>,
    lifecycle: tokio::sync::Mutex<()>,
    store: Arc<Store>,
    tailer: TailerHandle,
    bus: PresenceBus,
}

struct Table {
    inner: Mutex<TableInner>,
}

struct TableInner {
    cursor: String,
    subscribers: HashMap<Arc<str>, Subscriber>,
}

struct Subscriber {
    outbox: Outbox,
    /// Events at or before this id are skipped for this subscriber: it got
    /// them from history (recovery) before it was registered.
    after: Option<(u64, u64)>,
}

/// The outcome of [`Hub::join`].
#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// Registered: every event after the given id will be delivered.
    Joined(String),
    /// Not registered: this sidecar already fanned out events up to the
    /// given id, past the caller's history; read up to it and try again.
    Behind(String),
}

impl Hub {
    pub fn new(store: Arc<Store>, tailer: TailerHandle, bus: PresenceBus) -> Hub {
        Hub {
            tables: RwLock::new(HashMap::new()),
            lifecycle: tokio::sync::Mutex::new(()),
            store,
            tailer,
            bus,
        }
    }

    /// Registers `outbox` for `table`; returns the id after which it will
    /// receive every event.
    pub async fn subscribe(&self, table: &str, outbox: Outbox) -> Result<String, StoreError> {
        match self.join(table, outbox, None).await? {
            Join::Joined(cursor) | Join::Behind(cursor) => Ok(cursor),
        }
    }

    /// Registers `outbox` for `table` unless this sidecar has already fanned
    /// out events after `after` (then [`Join::Behind`]). With `after`, the
    /// subscriber skips events up to it: the caller sent those from history.
    pub async fn join(
        &self,
        table: &str,
        outbox: Outbox,
        after: Option<&str>,
    ) -> Result<Join, StoreError> {
        loop {
            if let Some(joined) = self.try_join(table, &outbox, after) {
                return Ok(joined);
            }
            let _serial = self.lifecycle.lock().await;
            if read(&self.tables).contains_key(table) {
                continue;
            }
            self.bus.add(table).await?;
            let cursor = match groups::start_serving(&self.store, table).await {
                Ok(c) => c,
                Err(e) => {
                    self.bus.remove(table).await;
                    return Err(e);
                }
            };
            let entry = Arc::new(Table {
                inner: Mutex::new(TableInner {
                    cursor,
                    subscribers: HashMap::new(),
                }),
            });
            write(&self.tables).insert(Arc::from(table), entry);
            crate::metrics::tables_tailed(read(&self.tables).len());
            self.tailer.add(table);
        }
    }

    fn try_join(&self, table: &str, outbox: &Outbox, after: Option<&str>) -> Option<Join> {
        let tables = read(&self.tables);
        let entry = tables.get(table)?;
        let mut inner = lock(&entry.inner);
        let after = after.map(parse_id);
        if after.is_some_and(|a| parse_id(&inner.cursor) > a) {
            return Some(Join::Behind(inner.cursor.clone()));
        }
        inner.subscribers.insert(
            outbox.conn_id.clone(),
            Subscriber {
                outbox: outbox.clone(),
                after,
            },
        );
        Some(Join::Joined(inner.cursor.clone()))
    }

    /// Removes a subscriber; the table stops being served when it was the last.
    pub async fn unsubscribe(&self, table: &str, conn_id: &str) {
        let now_empty = {
            let tables = read(&self.tables);
            let Some(entry) = tables.get(table) else {
                return;
            };
            let mut inner = lock(&entry.inner);
            inner.subscribers.remove(conn_id);
            inner.subscribers.is_empty()
        };
        if now_empty {
            self.retire(table).await;
        }
    }

    async fn retire(&self, table: &str) {
        let _serial = self.lifecycle.lock().await;
        let removed = {
            let mut tables = write(&self.tables);
            let empty = tables
                .get(table)
                .is_some_and(|t| lock(&t.inner).subscribers.is_empty());
            empty && tables.remove(table).is_some()
        };
        if !removed {
            return;
        }
        crate::metrics::tables_tailed(read(&self.tables).len());
        self.tailer.remove(table);
        self.bus.remove(table).await;
        if let Err(e) = groups::stop_serving(&self.store, table).await {
            tracing::warn!(table, error = %e, "could not remove the consumer group");
        }
    }

    /// The last event id fanned out for `table`, if it is served.
    pub fn cursor(&self, table: &str) -> Option<String> {
        let tables = read(&self.tables);
        let entry = tables.get(table)?;
        let cursor = lock(&entry.inner).cursor.clone();
        Some(cursor)
    }

    /// Ids of the tables with local subscribers.
    pub fn table_ids(&self) -> Vec<Arc<str>> {
        read(&self.tables).keys().cloned().collect()
    }

    /// Tables with local subscribers.
    pub fn table_count(&self) -> usize {
        read(&self.tables).len()
    }

    /// Total (connection, table) subscriptions.
    pub fn subscription_count(&self) -> usize {
        read(&self.tables)
            .values()
            .map(|t| lock(&t.inner).subscribers.len())
            .sum()
    }

    /// Fans out events read from `table`'s stream, in stream order.
    pub fn deliver(&self, table: &str, events: Vec<ChangeEvent>) {
        let tables = read(&self.tables);
        let Some(entry) = tables.get(table) else {
            return;
        };
        let mut inner = lock(&entry.inner);
        // Never hand out an event at or before the cursor twice (a group
        // placed again after a fault may return entries already sent).
        let after = parse_id(&inner.cursor);
        let events: Vec<ChangeEvent> = events
            .into_iter()
            .filter(|e| parse_id(&e.id) > after)
            .collect();
        let Some(last) = events.last() else {
            return;
        };
        inner.cursor = last.id.clone();
        let subscribers = inner.subscribers.len();
        // Bounded frames: a burst of large events goes out as several.
        for group in bounded_groups(&events) {
            fan_out(&mut inner, group);
        }
        crate::metrics::events_delivered(events.len(), subscribers);
    }
}

impl Hub {
    /// Relays a presence notice to the table's local subscribers, except
    /// the connection it came from; encoded once per encoding.
    pub fn notify(&self, table: &str, notice: Notice) {
        let Some(event) = PRESENCE_EVENTS.iter().copied().find(|e| *e == notice.event) else {
            tracing::warn!(table, event = %notice.event, "unknown presence notice");
            return;
        };
        let tables = read(&self.tables);
        let Some(entry) = tables.get(table) else {
            return;
        };
        let inner = lock(&entry.inner);
        let mut frames: [Option<Bytes>; 2] = [None, None];
        let mut sent = 0;
        for sub in inner.subscribers.values().map(|s| &s.outbox) {
            if notice.origin.as_deref() == Some(&*sub.conn_id) {
                continue;
            }
            let bytes = frames[sub.encoding.index()]
                .get_or_insert_with(|| encode_frame(sub.encoding, event, &notice.data, None))
                .clone();
            sub.push(bytes, None);
            sent += 1;
        }
        crate::metrics::messages_out(event, sent);
    }
}

const PRESENCE_EVENTS: [&str; 5] = [
    "user_joined",
    "user_reconnected",
    "user_left",
    "cursor_position",
    "selection",
];

/// Queues one group of events to every subscriber of the table.
fn fan_out(inner: &mut TableInner, events: &[ChangeEvent]) {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return;
    };
    let event_ms = Some(first.timestamp);
    let last_id = parse_id(&last.id);
    let mut frames = FrameCache::new(events);
    for sub in inner.subscribers.values_mut() {
        let bytes = match sub.after {
            Some(a) if last_id <= a => continue,
            Some(a) => {
                sub.after = None;
                // Rare: a recovering subscriber whose history ends inside this group.
                let newer: Vec<&ChangeEvent> = events
                    .iter()
                    .filter(|e| {
                        parse_id(&e.id) > a && e.origin.as_deref() != Some(&*sub.outbox.conn_id)
                    })
                    .collect();
                (!newer.is_empty()).then(|| frame(newer.into_iter(), sub.outbox.encoding))
            }
            None => frames.frame_for(&sub.outbox),
        };
        if let Some(bytes) = bytes {
            sub.outbox.push(bytes, event_ms);
        }
    }
}

/// Frames of one delivery: one shared frame per encoding, built on first
/// need. The connections that made some of the events (few: usually one)
/// are known up front, so every other subscriber costs one set lookup.
struct FrameCache<'a> {
    events: &'a [ChangeEvent],
    origins: HashSet<&'a str>,
    shared: [Option<Bytes>; 2],
}

impl<'a> FrameCache<'a> {
    fn new(events: &'a [ChangeEvent]) -> Self {
        FrameCache {
            events,
            origins: events.iter().filter_map(|e| e.origin.as_deref()).collect(),
            shared: [None, None],
        }
    }

    fn frame_for(&mut self, sub: &Outbox) -> Option<Bytes> {
        let events = self.events;
        let conn: &str = &sub.conn_id;
        if !self.origins.contains(conn) {
            let slot = &mut self.shared[sub.encoding.index()];
            return Some(
                slot.get_or_insert_with(|| frame(events.iter(), sub.encoding))
                    .clone(),
            );
        }
        // The origin gets the others' events only (its own were acked); a
        // connection id is unique, so this frame is built for one subscriber.
        let others: Vec<&ChangeEvent> = events
            .iter()
            .filter(|e| e.origin.as_deref() != Some(conn))
            .collect();
        (!others.is_empty()).then(|| frame(others.into_iter(), sub.encoding))
    }
}

/// `record_change` for one event, `batch_changes` for several.
fn frame<'e, I>(events: I, encoding: Encoding) -> Bytes
where
    I: ExactSizeIterator<Item = &'e ChangeEvent> + Clone,
{
    if events.len() == 1 {
        if let Some(e) = events.clone().next() {
            return single_frame("record_change", e, encoding);
        }
    }
    list_frame("batch_changes", events, encoding)
}

// Poisoning only follows a panic elsewhere; the maps stay consistent (every
// critical section is a single insert/remove), so keep serving.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}
