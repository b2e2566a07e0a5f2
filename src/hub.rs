//! The hub: which local connections subscribe to which table, and the
//! fan-out of stream events to them.
//!
//! Data flow: the tailer hands [`Hub::deliver`] the events it read for a
//! table, in stream order. The hub encodes the frame once per audience (a
//! framing, and the set of fields its subscriber may read) and pushes the
//! same `Bytes` into every subscriber's bounded [`Outbox`]. Subscribers who
//! read every field share one frame per framing, as before; a permission
//! class with hidden fields gets each event masked once (`grant::masking`)
//! and that copy encoded once per framing; when masking hides nothing in a
//! delivery, the class shares the full frame.
//! A subscriber that made some of the events gets a frame without them (its
//! own writes were answered by `ack`); that frame reuses each event's cached
//! bytes, so nothing is encoded twice.
//!
//! Each table keeps a cursor: the id of the last event fanned out. A new
//! subscriber is registered under the same lock that advances it, so "every
//! event after `lastEventId`" is exact. It joins *pending*: what the table
//! fans out meanwhile is held for it (bounded) until the session has queued
//! its ack and history, then [`Hub::activate`] releases it in order. So no
//! live event ever precedes the ack (docs/protocol.md section 3.1). The first
//! subscriber of a table starts serving it and the last one leaving stops
//! it, through the store's [`TableLifecycle`] (per-table locks there). The
//! hub keeps subscribers, cursors and frames, and needs no Redis: the store
//! calls it through [`EventHandler`].

mod filtered;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use crate::cohort::{view_change, Cohorts, Scope};
use crate::store::records::RecordState;

use crate::change::StreamId;
use crate::grant::masking::{self, Masked};
use crate::grant::ReadMask;
use crate::outbox::{Frame, Outbox};
use crate::protocol::event::{bounded_groups, ChangeEvent};
use crate::protocol::framing::{Framing, SLOTS};
use crate::protocol::messages::ViewportFilter;
use crate::protocol::ServerEvent;
use crate::store::events::EventHandler;
use crate::store::events::Notice;
use crate::store::serving::TableLifecycle;
use crate::store::StoreError;

pub struct Hub {
    tables: RwLock<HashMap<Arc<str>, Arc<Table>>>,
    lifecycle: Arc<dyn TableLifecycle>,
}

struct Table {
    inner: Mutex<TableInner>,
}

struct TableInner {
    cursor: StreamId,
    subscribers: HashMap<Arc<str>, Subscriber>,
    /// v1.3: the filtered subscribers' cohorts (`src/hub/filtered.rs`).
    cohorts: Cohorts,
    /// v1.3: records whose filtered subscribers hold a newer state than
    /// the events still to come (`src/hub/filtered.rs`).
    jumps: filtered::Jumps,
}

struct Subscriber {
    outbox: Outbox,
    /// The fields it may not read; `None` when it reads every field.
    mask: Option<Arc<ReadMask>>,
    /// Frames held until the subscriber is activated (its ack and history
    /// are queued); `None` once live.
    pending: Option<Pending>,
    /// v1.3 (3.4): what its cursor and editing relays are limited to.
    relay: ViewportRelay,
    /// v1.3 (2.2, 3.5): its cohort, when a row grant or a view filters it.
    cohort: Option<u64>,
    /// v1.3: its row grant and view, so its filter follows `view` events.
    scope: Option<Scope>,
}

/// A subscriber's viewport relay filter: with `relay: "viewport"` on
/// subscribe, cursor and editing relays on records outside its last
/// viewport are not sent (everything is, until it sends one).
#[derive(Default)]
struct ViewportRelay {
    by_viewport: bool,
    viewport: Option<Arc<ViewportFilter>>,
}

impl ViewportRelay {
    /// False when a relay about `record` is to be skipped.
    fn wants(&self, record: Option<&str>) -> bool {
        match (self.by_viewport, &self.viewport, record) {
            (true, Some(v), Some(r)) => v.holds(r),
            _ => true,
        }
    }
}

/// The record a relayed notice is about, when viewports filter it: a
/// cursor's, or a started editing indicator's (a stop always goes out, so
/// no one is left with an indicator that scrolled out of view).
fn relayed_record(event: ServerEvent, data: &serde_json::Value) -> Option<&str> {
    match event {
        ServerEvent::CursorPosition => data.get("cursor")?.get("recordId")?.as_str(),
        ServerEvent::UserEditing if data.get("state")?.as_str() == Some("start") => {
            data.get("recordId")?.as_str()
        }
        _ => None,
    }
}

#[derive(Default)]
struct Pending {
    frames: Vec<(Frame, Option<u64>)>,
    bytes: usize,
}

impl Subscriber {
    /// Queues a frame, or holds it while the subscriber is pending. A
    /// pending subscriber that would hold more than its queue's byte limit
    /// is a slow consumer (4503).
    fn push(&mut self, bytes: Frame, event_ms: Option<u64>) {
        let Some(pending) = &mut self.pending else {
            self.outbox.push(bytes, event_ms);
            return;
        };
        pending.bytes += bytes.len();
        if pending.bytes > self.outbox.max_bytes() {
            pending.frames.clear();
            self.outbox.drop_slow();
            return;
        }
        pending.frames.push((bytes, event_ms));
    }
}

impl Hub {
    pub fn new(lifecycle: Arc<dyn TableLifecycle>) -> Hub {
        Hub {
            tables: RwLock::new(HashMap::new()),
            lifecycle,
        }
    }

    /// Registers `outbox` for `table`, pending; returns the subscription's
    /// start: the id after which it will receive every event, once
    /// [`Hub::activate`]d.
    pub async fn join(
        &self,
        table: &str,
        outbox: Outbox,
        mask: Option<Arc<ReadMask>>,
        scope: Option<Scope>,
    ) -> Result<StreamId, StoreError> {
        loop {
            if let Some(start) = self.try_join(table, &outbox, &mask, &scope) {
                return Ok(start);
            }
            let _serial = self.lifecycle.lock(table).await;
            if read(&self.tables).contains_key(table) {
                continue;
            }
            let cursor = self.lifecycle.start(table).await?;
            let entry = Arc::new(Table {
                inner: Mutex::new(TableInner {
                    cursor,
                    subscribers: HashMap::new(),
                    cohorts: Cohorts::default(),
                    jumps: Default::default(),
                }),
            });
            write(&self.tables).insert(Arc::from(table), entry);
            crate::metrics::tables_tailed(read(&self.tables).len());
            // Only now: an entry read before the table was registered here
            // would have had nowhere to go.
            self.lifecycle.tail(table);
        }
    }

    fn try_join(
        &self,
        table: &str,
        outbox: &Outbox,
        mask: &Option<Arc<ReadMask>>,
        scope: &Option<Scope>,
    ) -> Option<StreamId> {
        let tables = read(&self.tables);
        let entry = tables.get(table)?;
        let mut inner = lock(&entry.inner);
        let conn = &outbox.conn_id;
        leave_cohort(&mut inner, conn);
        let cohort = join_cohort(&mut inner, conn, scope.as_ref(), mask);
        inner.subscribers.insert(
            outbox.conn_id.clone(),
            Subscriber {
                outbox: outbox.clone(),
                mask: mask.clone(),
                pending: Some(Pending::default()),
                relay: ViewportRelay::default(),
                cohort,
                scope: scope.clone(),
            },
        );
        Some(inner.cursor)
    }

    /// Makes a pending subscriber live: the frames held for it are queued
    /// (after everything its session queued before), then it gets frames
    /// directly. Under the table lock, so nothing slips in between.
    pub fn activate(&self, table: &str, conn_id: &str) {
        let tables = read(&self.tables);
        let Some(entry) = tables.get(table) else {
            return;
        };
        let mut inner = lock(&entry.inner);
        let Some(sub) = inner.subscribers.get_mut(conn_id) else {
            return;
        };
        if let Some(pending) = sub.pending.take() {
            for (bytes, event_ms) in pending.frames {
                if !sub.outbox.push(bytes, event_ms) {
                    break;
                }
            }
        }
    }

    /// Removes a subscriber; the table stops being served when it was the last.
    pub async fn unsubscribe(&self, table: &str, conn_id: &str) {
        let now_empty = {
            let tables = read(&self.tables);
            let Some(entry) = tables.get(table) else {
                return;
            };
            let mut inner = lock(&entry.inner);
            leave_cohort(&mut inner, conn_id);
            inner.subscribers.remove(conn_id);
            inner.subscribers.is_empty()
        };
        if now_empty {
            self.retire(table).await;
        }
    }

    async fn retire(&self, table: &str) {
        let _serial = self.lifecycle.lock(table).await;
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
        self.lifecycle.stop(table).await;
    }

    /// v1.3: `conn_id`'s cursor and editing relays on `table` follow its
    /// viewport from now on (`relay: "viewport"`).
    pub fn relay_by_viewport(&self, table: &str, conn_id: &str) {
        self.with_subscriber(table, conn_id, |r| r.by_viewport = true);
    }

    /// v1.3: the rows `conn_id` sees on `table`.
    pub fn set_viewport(&self, table: &str, conn_id: &str, viewport: ViewportFilter) {
        let viewport = Some(Arc::new(viewport));
        self.with_subscriber(table, conn_id, |r| r.viewport = viewport);
    }

    fn with_subscriber(&self, table: &str, conn_id: &str, f: impl FnOnce(&mut ViewportRelay)) {
        let tables = read(&self.tables);
        let Some(entry) = tables.get(table) else {
            return;
        };
        let mut inner = lock(&entry.inner);
        if let Some(sub) = inner.subscribers.get_mut(conn_id) {
            f(&mut sub.relay);
        }
    }

    /// The last event id fanned out for `table`, if it is served.
    pub fn cursor(&self, table: &str) -> Option<StreamId> {
        let tables = read(&self.tables);
        let entry = tables.get(table)?;
        let cursor = lock(&entry.inner).cursor;
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
        self.deliver_with_states(table, events, &HashMap::new());
    }

    /// v1.3: whether `table` has filtered subscribers.
    pub fn wants_states(&self, table: &str) -> bool {
        let tables = read(&self.tables);
        tables
            .get(table)
            .is_some_and(|t| !lock(&t.inner).cohorts.is_empty())
    }

    /// [`Hub::deliver`], with the touched records' states for the
    /// filtered subscribers (`src/hub/filtered.rs`).
    pub fn deliver_with_states(
        &self,
        table: &str,
        events: Vec<ChangeEvent>,
        states: &HashMap<String, RecordState>,
    ) {
        let tables = read(&self.tables);
        let Some(entry) = tables.get(table) else {
            return;
        };
        deliver_after_cursor(&mut lock(&entry.inner), table, events, states);
    }

    /// See [`EventHandler::deliver_following`]. A table with filtered
    /// subscribers is read instead: its cohorts need the records' states.
    pub fn deliver_following(
        &self,
        table: &str,
        prev: StreamId,
        id: StreamId,
        events: Vec<ChangeEvent>,
    ) -> bool {
        let tables = read(&self.tables);
        let Some(entry) = tables.get(table) else {
            return true;
        };
        let mut inner = lock(&entry.inner);
        if id <= inner.cursor {
            return true;
        }
        // The entries from `prev` to `id` follow on in the stream, and the
        // cursor is an entry delivered here: at or after `prev`, it is one
        // of them, and the ones after it are exactly what is missing.
        if prev > inner.cursor || !inner.cohorts.is_empty() {
            return false;
        }
        if events.is_empty() {
            // Malformed entries (skipped and counted when decoded).
            inner.cursor = id;
            return true;
        }
        deliver_after_cursor(&mut inner, table, events, &HashMap::new());
        inner.cursor = inner.cursor.max(id);
        true
    }
}

/// Fans out `events` of `table` that come after its cursor, in stream
/// order, and moves the cursor to the last one.
fn deliver_after_cursor(
    inner: &mut TableInner,
    table: &str,
    events: Vec<ChangeEvent>,
    states: &HashMap<String, RecordState>,
) {
    // Never hand out an event at or before the cursor twice (a group
    // placed again after a fault may return entries already sent).
    let after = inner.cursor;
    let events: Vec<ChangeEvent> = events.into_iter().filter(|e| e.id > after).collect();
    let Some(last) = events.last() else {
        return;
    };
    inner.cursor = last.id;
    let subscribers = inner.subscribers.len();
    // Bounded frames: a burst of large events goes out as several.
    // A view's new filter applies from its event on: the events before
    // it are fanned out first.
    let mut rest: &[ChangeEvent] = &events;
    while !rest.is_empty() {
        let cut = rest
            .iter()
            .skip(1)
            .position(|e| view_change(e).is_some())
            .map_or(rest.len(), |i| i + 1);
        let (part, after) = rest.split_at(cut);
        if let Some((view, filter)) = part.first().and_then(view_change) {
            refilter(inner, view, filter);
        }
        for group in bounded_groups(part) {
            fan_out(inner, group);
        }
        filtered::fan_out(inner, table, part, states);
        rest = after;
    }
    crate::metrics::events_delivered(events.len(), subscribers);
}

impl Hub {
    /// Relays a presence notice to the table's local subscribers, except
    /// the connection it came from; encoded once per encoding.
    pub fn notify(&self, table: &str, notice: Notice) {
        let Some(event) = ServerEvent::presence(&notice.event) else {
            tracing::warn!(table, event = %notice.event, "unknown presence notice");
            return;
        };
        let tables = read(&self.tables);
        let Some(entry) = tables.get(table) else {
            return;
        };
        let mut inner = lock(&entry.inner);
        let mut frames: Audiences<Option<Frame>> = Audiences::default();
        let mut unplaced_frames: Audiences<Option<Frame>> = Audiences::default();
        // v1.3 (2.2): what a filtered subscriber is sent of a user who
        // (re)joins: without where they point, select, edit or look.
        let mut unplaced: Option<serde_json::Value> = None;
        let (mut sent, mut skipped) = (0, 0);
        let record = relayed_record(event, &notice.data);
        for sub in inner.subscribers.values_mut() {
            let (conn, framing) = (&*sub.outbox.conn_id, sub.outbox.framing());
            if notice.origin.as_deref() == Some(conn) {
                continue;
            }
            // v1.3 (2.2): a filtered subscriber is not told where others
            // point, edit or look: the record may be outside its rows.
            let filtered = sub.cohort.is_some();
            if filtered && names_record(event) {
                skipped += 1;
                continue;
            }
            if !sub.relay.wants(record) {
                skipped += 1;
                continue;
            }
            let (data, cache) = match filtered {
                true => (
                    &*unplaced.get_or_insert_with(|| {
                        let mut data = notice.data.clone();
                        crate::cohort::unplaced(&mut data);
                        data
                    }),
                    &mut unplaced_frames,
                ),
                false => (&notice.data, &mut frames),
            };
            let bytes = cache.slot(sub.mask.as_ref(), framing.slot(), || {
                match sub.mask.as_deref() {
                    None => Some(Frame::shared(framing.frame(event, data, None))),
                    Some(mask) => masking::notice(event, data, mask)
                        .map(|data| Frame::shared(framing.frame(event, &data, None))),
                }
            });
            if let Some(bytes) = bytes {
                sub.push(bytes, None);
                sent += 1;
            }
        }
        crate::metrics::messages_out(event, sent);
        crate::metrics::relays_skipped_viewport(skipped);
    }
}

impl EventHandler for Hub {
    fn deliver(&self, table: &str, events: Vec<ChangeEvent>) {
        Hub::deliver(self, table, events);
    }

    fn wants_states(&self, table: &str) -> bool {
        Hub::wants_states(self, table)
    }

    fn deliver_with_states(
        &self,
        table: &str,
        events: Vec<ChangeEvent>,
        states: HashMap<String, RecordState>,
    ) {
        Hub::deliver_with_states(self, table, events, &states);
    }

    fn deliver_following(
        &self,
        table: &str,
        prev: StreamId,
        id: StreamId,
        events: Vec<ChangeEvent>,
    ) -> bool {
        Hub::deliver_following(self, table, prev, id, events)
    }

    fn notify(&self, table: &str, notice: Notice) {
        Hub::notify(self, table, notice);
    }

    fn cursor(&self, table: &str) -> Option<StreamId> {
        Hub::cursor(self, table)
    }
}

/// Puts `conn` in the cohort of its scope's filter, if it has one.
fn join_cohort(
    inner: &mut TableInner,
    conn: &Arc<str>,
    scope: Option<&Scope>,
    mask: &Option<Arc<ReadMask>>,
) -> Option<u64> {
    let filter = scope?.filter()?;
    let before = inner.cohorts.len();
    let id = inner.cohorts.add(conn.clone(), &filter, mask.clone());
    crate::metrics::filter_cohorts(inner.cohorts.len() as f64 - before as f64);
    Some(id)
}

/// v1.3 (3.5): `view`'s filter is now `filter`: its subscribers move to
/// the cohort of their new filter (or to the unfiltered path). Their
/// clients reload the view on its `view` event (`load_records {viewId}`).
fn refilter(inner: &mut TableInner, view: &str, filter: Option<Arc<crate::filter::Filter>>) {
    let conns: Vec<Arc<str>> = inner
        .subscribers
        .iter()
        .filter(|(_, s)| {
            s.scope
                .as_ref()
                .and_then(|sc| sc.view.as_ref())
                .is_some_and(|(v, _)| &**v == view)
        })
        .map(|(c, _)| c.clone())
        .collect();
    for conn in conns {
        leave_cohort(inner, &conn);
        let Some(sub) = inner.subscribers.get_mut(&conn) else {
            continue;
        };
        let mask = sub.mask.clone();
        let scope = sub.scope.as_mut().map(|sc| {
            if let Some((_, f)) = sc.view.as_mut() {
                *f = filter.clone();
            }
            sc.clone()
        });
        let cohort = join_cohort(inner, &conn, scope.as_ref(), &mask);
        if let Some(sub) = inner.subscribers.get_mut(&conn) {
            sub.cohort = cohort;
        }
    }
}

/// Takes `conn` out of its cohort, if it is in one.
fn leave_cohort(inner: &mut TableInner, conn: &str) {
    let Some(id) = inner.subscribers.get(conn).and_then(|s| s.cohort) else {
        return;
    };
    let before = inner.cohorts.len();
    inner.cohorts.remove(id, conn);
    crate::metrics::filter_cohorts(inner.cohorts.len() as f64 - before as f64);
}

/// Presence relays that name a record (v1.3, 2.2: not sent to filtered
/// subscribers). A viewport lists record ids too.
fn names_record(event: ServerEvent) -> bool {
    matches!(
        event,
        ServerEvent::CursorPosition
            | ServerEvent::Selection
            | ServerEvent::UserEditing
            | ServerEvent::UserViewport
    )
}

/// Queues one group of events to every unfiltered subscriber of the table
/// (filtered ones get theirs from `filtered::fan_out`).
fn fan_out(inner: &mut TableInner, events: &[ChangeEvent]) {
    let Some(first) = events.first() else {
        return;
    };
    let event_ms = Some(first.timestamp);
    let mut frames = FrameCache::new(events);
    for sub in inner
        .subscribers
        .values_mut()
        .filter(|s| s.cohort.is_none())
    {
        if let Some(bytes) = frames.frame_for(&sub.outbox, sub.mask.as_ref()) {
            sub.push(bytes, event_ms);
        }
    }
}

/// One value per audience: per framing slot for the subscribers who read
/// every field, and per (permission class, slot) for the others. Classes
/// are few (a handful per table), so they are found by a linear search,
/// by pointer first (one identity's connections share their mask) and
/// then by value.
struct Audiences<T> {
    full: [Option<T>; SLOTS],
    classes: Vec<(Arc<ReadMask>, [Option<T>; SLOTS])>,
}

impl<T> Default for Audiences<T> {
    fn default() -> Self {
        Audiences {
            full: Default::default(),
            classes: Vec::new(),
        }
    }
}

impl<T: Clone> Audiences<T> {
    /// The value of an audience, made by `make` on first need.
    fn slot(&mut self, mask: Option<&Arc<ReadMask>>, slot: usize, make: impl FnOnce() -> T) -> T {
        let cell = match mask {
            None => &mut self.full[slot],
            Some(mask) => &mut self.class(mask)[slot],
        };
        cell.get_or_insert_with(make).clone()
    }

    fn class(&mut self, mask: &Arc<ReadMask>) -> &mut [Option<T>; SLOTS] {
        let found = self
            .classes
            .iter()
            .position(|(m, _)| Arc::ptr_eq(m, mask) || **m == **mask);
        let i = match found {
            Some(i) => i,
            None => {
                self.classes.push((mask.clone(), Default::default()));
                self.classes.len() - 1
            }
        };
        &mut self.classes[i].1
    }
}

/// One delivery's events as one permission class sees them: each event
/// masked once, whatever the number of subscribers in the class.
struct ClassEvents<'a> {
    mask: Arc<ReadMask>,
    events: Vec<Masked<'a>>,
    /// Masking hid nothing: the class shares the full frames.
    unchanged: bool,
}

impl ClassEvents<'_> {
    /// The events the class is sent, masked.
    fn visible(&self) -> Vec<&ChangeEvent> {
        self.events.iter().filter_map(Masked::event).collect()
    }
}

/// Frames of one delivery: one shared frame per audience, built on first
/// need. The connections that made some of the events (few: usually one)
/// are known up front, so every other subscriber costs one set lookup.
struct FrameCache<'a> {
    events: Vec<&'a ChangeEvent>,
    origins: HashSet<&'a str>,
    classes: Vec<ClassEvents<'a>>,
    frames: Audiences<Option<Frame>>,
}

impl<'a> FrameCache<'a> {
    fn new(events: &'a [ChangeEvent]) -> Self {
        FrameCache {
            events: events.iter().collect(),
            origins: events.iter().filter_map(|e| e.origin.as_deref()).collect(),
            classes: Vec::new(),
            frames: Audiences::default(),
        }
    }

    fn frame_for(&mut self, sub: &Outbox, mask: Option<&Arc<ReadMask>>) -> Option<Frame> {
        let conn: &str = &sub.conn_id;
        let framing = sub.framing();
        // A class that masking leaves untouched shares the full frames.
        let class = mask
            .map(|m| class_events(&mut self.classes, &self.events, m))
            .filter(|c| !c.unchanged);
        if !self.origins.contains(conn) {
            // The shared frame of the audience: the only path most
            // subscribers take, so it copies nothing unless it builds.
            let events = &self.events;
            return self
                .frames
                .slot(class.map(|c| &c.mask), framing.slot(), || {
                    crate::metrics::fanout_frame_built(class.is_some());
                    match class {
                        None => frame(events, framing),
                        Some(c) => frame(&c.visible(), framing),
                    }
                });
        }
        // The origin gets the others' events only (its own were acked); a
        // connection id is unique, so this frame is built for one subscriber.
        let mine = |e: &&ChangeEvent| e.origin.as_deref() == Some(conn);
        let others: Vec<&ChangeEvent> = match class {
            None => self.events.iter().copied().filter(|e| !mine(e)).collect(),
            Some(c) => c.visible().into_iter().filter(|e| !mine(e)).collect(),
        };
        frame(&others, framing)
    }
}

/// The events of `mask`'s class, masked on first need.
fn class_events<'c, 'a>(
    classes: &'c mut Vec<ClassEvents<'a>>,
    events: &[&'a ChangeEvent],
    mask: &Arc<ReadMask>,
) -> &'c ClassEvents<'a> {
    let found = classes
        .iter()
        .position(|c| Arc::ptr_eq(&c.mask, mask) || *c.mask == **mask);
    let i = match found {
        Some(i) => i,
        None => {
            let masked: Vec<Masked<'a>> = events.iter().map(|e| masking::event(e, mask)).collect();
            let unchanged = masked.iter().all(Masked::is_same);
            classes.push(ClassEvents {
                mask: mask.clone(),
                events: masked,
                unchanged,
            });
            classes.len() - 1
        }
    };
    &classes[i]
}

/// `record_change` for one event, `batch_changes` for several; none for
/// none (a class that sees none of the events).
fn frame(events: &[&ChangeEvent], framing: &dyn Framing) -> Option<Frame> {
    match events {
        [] => None,
        [one] => Some(Frame::shared(
            framing.event_frame(ServerEvent::RecordChange, one),
        )),
        _ => Some(Frame::shared(
            framing.events_frame(ServerEvent::BatchChanges, events),
        )),
    }
}

// Poisoning only follows a panic elsewhere; the maps stay consistent (every
// critical section is a single insert/remove), so keep serving.
use crate::locks::{lock, read, write};

#[cfg(test)]
mod tests {
    //! The hub without Redis: a fake lifecycle, real outboxes.
    use super::*;
    use crate::outbox::{outbox, OutboxReceiver};
    use crate::store::serving::TableLifecycle;
    use futures_util::future::BoxFuture;
    use serde_json::Value;
    use tokio::sync::{Mutex as AsyncMutex, MutexGuard};

    #[derive(Default)]
    struct FakeLifecycle {
        serial: AsyncMutex<()>,
        /// The hub, to look at when a table is tailed.
        hub: std::sync::OnceLock<std::sync::Weak<Hub>>,
        /// Per `tail`: the table, and whether the hub had registered it.
        tailed: std::sync::Mutex<Vec<(String, bool)>>,
    }

    impl TableLifecycle for FakeLifecycle {
        fn lock<'a>(&'a self, _table: &str) -> BoxFuture<'a, MutexGuard<'a, ()>> {
            Box::pin(self.serial.lock())
        }
        fn start<'a>(&'a self, _table: &'a str) -> BoxFuture<'a, Result<StreamId, StoreError>> {
            Box::pin(async { Ok(id("5-0")) })
        }
        fn tail(&self, table: &str) {
            let registered = self
                .hub
                .get()
                .and_then(std::sync::Weak::upgrade)
                .is_some_and(|h| h.cursor(table).is_some());
            lock(&self.tailed).push((table.to_owned(), registered));
        }
        fn stop<'a>(&'a self, _table: &'a str) -> BoxFuture<'a, ()> {
            Box::pin(async {})
        }
    }

    fn hub() -> Hub {
        Hub::new(Arc::new(FakeLifecycle::default()))
    }

    #[tokio::test]
    async fn a_table_is_tailed_once_and_only_after_the_hub_registered_it() {
        let lifecycle = Arc::new(FakeLifecycle::default());
        let hub = Arc::new(Hub::new(lifecycle.clone()));
        let _ = lifecycle.hub.set(Arc::downgrade(&hub));
        let (a, _rx_a) = subscriber("c1", 1 << 20);
        let (b, _rx_b) = subscriber("c2", 1 << 20);
        hub.join("t", a, None, None).await.expect("join");
        hub.join("t", b, None, None).await.expect("join");
        assert_eq!(*lock(&lifecycle.tailed), vec![("t".to_owned(), true)]);
    }

    fn subscriber(id: &str, max_bytes: usize) -> (Outbox, OutboxReceiver) {
        outbox(
            Arc::from(id),
            &crate::protocol::framing::WS_JSON,
            64,
            max_bytes,
        )
    }

    fn id(text: &str) -> StreamId {
        StreamId::parse(text).expect("a stream id")
    }

    fn event(event_id: &str, origin: Option<&str>) -> ChangeEvent {
        let mut fields = vec![
            ("type".to_owned(), b"update".to_vec()),
            ("entityType".to_owned(), b"record".to_vec()),
            ("entityId".to_owned(), b"r".to_vec()),
            ("userId".to_owned(), b"u".to_vec()),
        ];
        if let Some(o) = origin {
            fields.push(("origin".to_owned(), o.as_bytes().to_vec()));
        }
        ChangeEvent::from_entry(id(event_id), &fields, Some("t")).expect("a valid entry")
    }

    /// The event ids of the frames queued so far, frame by frame.
    fn queued_ids(rx: &mut OutboxReceiver) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        while let Some(bytes) = rx.try_next() {
            let frame: Value = serde_json::from_slice(&bytes).expect("JSON frame");
            let data = &frame[1];
            let ids = match data.as_array() {
                Some(list) => list
                    .iter()
                    .map(|e| e["id"].as_str().unwrap_or("").to_owned())
                    .collect(),
                None => vec![data["id"].as_str().unwrap_or("").to_owned()],
            };
            out.push(ids);
        }
        out
    }

    fn editing_notice(record: &str, state: &str) -> Notice {
        serde_json::from_value(serde_json::json!({"event": "user_editing", "origin": "x",
            "data": {"userId": "u", "color": "#000", "tableId": "t", "recordId": record,
                "fieldId": "f", "state": state}}))
        .expect("a notice")
    }

    #[tokio::test]
    async fn a_viewport_subscriber_is_not_sent_editing_starts_outside_its_viewport() {
        let hub = hub();
        let (ob, mut rx) = subscriber("c1", 1 << 20);
        hub.join("t", ob, None, None).await.expect("join");
        hub.activate("t", "c1");
        hub.relay_by_viewport("t", "c1");
        hub.notify("t", editing_notice("r05", "start"));
        assert!(
            rx.try_next().is_some(),
            "everything until it sends a viewport"
        );
        let range = ViewportFilter::Range("r10".into(), "r19".into());
        hub.set_viewport("t", "c1", range);
        hub.notify("t", editing_notice("r05", "start"));
        assert!(rx.try_next().is_none(), "outside the viewport");
        hub.notify("t", editing_notice("r12", "start"));
        assert!(rx.try_next().is_some(), "inside the viewport");
        hub.notify("t", editing_notice("r05", "stop"));
        assert!(rx.try_next().is_some(), "a stop always goes out");
    }

    #[tokio::test]
    async fn a_viewport_without_relay_viewport_filters_nothing() {
        let hub = hub();
        let (ob, mut rx) = subscriber("c1", 1 << 20);
        hub.join("t", ob, None, None).await.expect("join");
        hub.activate("t", "c1");
        hub.set_viewport("t", "c1", ViewportFilter::Ids(["r1".to_owned()].into()));
        hub.notify("t", editing_notice("r05", "start"));
        assert!(rx.try_next().is_some());
    }

    #[tokio::test]
    async fn a_pending_subscriber_gets_live_events_only_once_activated_in_order() {
        let hub = hub();
        let (ob, mut rx) = subscriber("c1", 1 << 20);
        let start = hub.join("t", ob, None, None).await.expect("join");
        assert_eq!(start, id("5-0"));
        hub.deliver("t", vec![event("6-0", None)]);
        hub.deliver("t", vec![event("7-0", None), event("8-0", None)]);
        assert!(queued_ids(&mut rx).is_empty(), "nothing before activation");
        hub.activate("t", "c1");
        assert_eq!(queued_ids(&mut rx), vec![vec!["6-0"], vec!["7-0", "8-0"]]);
        hub.deliver("t", vec![event("9-0", None)]);
        assert_eq!(queued_ids(&mut rx), vec![vec!["9-0"]]);
    }

    #[tokio::test]
    async fn events_at_or_before_the_cursor_are_never_delivered() {
        let (hub, mut rx) = hub_with_live_subscriber().await;
        hub.deliver(
            "t",
            vec![event("4-0", None), event("5-0", None), event("5-1", None)],
        );
        assert_eq!(queued_ids(&mut rx), vec![vec!["5-1"]]);
        assert_eq!(hub.cursor("t"), Some(id("5-1")));
    }

    /// A hub with one active subscriber `c1` of table `t` (cursor 5-0).
    async fn hub_with_live_subscriber() -> (Hub, OutboxReceiver) {
        let hub = hub();
        let (ob, rx) = subscriber("c1", 1 << 20);
        hub.join("t", ob, None, None).await.expect("join");
        hub.activate("t", "c1");
        (hub, rx)
    }

    #[tokio::test]
    async fn a_doorbell_entry_following_the_cursor_is_delivered() {
        let (hub, mut rx) = hub_with_live_subscriber().await;
        let delivered = hub.deliver_following("t", id("5-0"), id("6-0"), vec![event("6-0", None)]);
        assert!(delivered);
        assert_eq!(queued_ids(&mut rx), vec![vec!["6-0"]]);
        assert_eq!(hub.cursor("t"), Some(id("6-0")));
    }

    #[tokio::test]
    async fn a_doorbell_entry_after_a_gap_is_left_to_the_stream_read() {
        let (hub, mut rx) = hub_with_live_subscriber().await;
        // 5-5 (a producer's entry, say) was never delivered here.
        let delivered = hub.deliver_following("t", id("5-5"), id("6-0"), vec![event("6-0", None)]);
        assert!(!delivered);
        assert!(queued_ids(&mut rx).is_empty());
        assert_eq!(hub.cursor("t"), Some(id("5-0")));
    }

    #[tokio::test]
    async fn doorbell_entries_partly_read_already_deliver_only_the_rest() {
        let (hub, mut rx) = hub_with_live_subscriber().await;
        hub.deliver("t", vec![event("6-0", None)]);
        assert_eq!(queued_ids(&mut rx), vec![vec!["6-0"]]);
        // 6-0 and 7-0 came with their doorbells, following 5-0.
        let events = vec![event("6-0", None), event("7-0", None)];
        assert!(hub.deliver_following("t", id("5-0"), id("7-0"), events));
        assert_eq!(queued_ids(&mut rx), vec![vec!["7-0"]]);
        assert_eq!(hub.cursor("t"), Some(id("7-0")));
    }

    #[tokio::test]
    async fn a_doorbell_entry_already_read_is_not_sent_twice() {
        let (hub, mut rx) = hub_with_live_subscriber().await;
        hub.deliver("t", vec![event("6-0", None), event("7-0", None)]);
        assert_eq!(queued_ids(&mut rx), vec![vec!["6-0", "7-0"]]);
        let handled = hub.deliver_following("t", id("5-0"), id("6-0"), vec![event("6-0", None)]);
        assert!(handled, "handled: it went out with the read");
        assert!(queued_ids(&mut rx).is_empty());
    }

    #[tokio::test]
    async fn the_origin_gets_the_others_events_and_everyone_shares_one_frame() {
        let hub = hub();
        let (a, mut rx_a) = subscriber("a", 1 << 20);
        let (b, mut rx_b) = subscriber("b", 1 << 20);
        let (c, mut rx_c) = subscriber("c", 1 << 20);
        for ob in [a, b, c] {
            let id = ob.conn_id.clone();
            hub.join("t", ob, None, None).await.expect("join");
            hub.activate("t", &id);
        }
        hub.deliver("t", vec![event("6-0", Some("a")), event("7-0", Some("z"))]);
        assert_eq!(queued_ids(&mut rx_a), vec![vec!["7-0"]], "not its own");
        let (fb, fc) = (rx_b.try_next().unwrap(), rx_c.try_next().unwrap());
        assert_eq!(fb, fc);
        assert_eq!(fb.as_ptr(), fc.as_ptr(), "the same bytes, not a copy");
    }

    #[tokio::test]
    async fn a_pending_subscriber_that_would_hold_too_much_is_closed_as_slow() {
        let hub = hub();
        let (ob, mut rx) = subscriber("c1", 200);
        hub.join("t", ob, None, None).await.expect("join");
        for n in 6..20 {
            hub.deliver("t", vec![event(&format!("{n}-0"), None)]);
        }
        assert_eq!(rx.close_code(), Some(4503));
        assert!(queued_ids(&mut rx).is_empty());
    }

    #[tokio::test]
    async fn presence_notices_wait_for_activation_and_skip_their_origin() {
        let hub = hub();
        let (a, mut rx_a) = subscriber("a", 1 << 20);
        let (b, mut rx_b) = subscriber("b", 1 << 20);
        hub.join("t", a, None, None).await.expect("join");
        hub.activate("t", "a");
        hub.join("t", b, None, None).await.expect("join");
        let notice = |origin: &str| Notice {
            event: "cursor_position".to_owned(),
            data: serde_json::json!({"userId": "u"}),
            origin: Some(origin.to_owned()),
        };
        hub.notify("t", notice("a"));
        assert!(rx_a.try_next().is_none(), "not to its origin");
        assert!(rx_b.try_next().is_none(), "b is pending");
        hub.activate("t", "b");
        assert!(rx_b.try_next().is_some());
    }

    fn salary_event(event_id: &str, changes: &str) -> ChangeEvent {
        let fields = vec![
            ("type".to_owned(), b"update".to_vec()),
            ("entityType".to_owned(), b"record".to_vec()),
            ("entityId".to_owned(), b"r".to_vec()),
            ("userId".to_owned(), b"u".to_vec()),
            ("version".to_owned(), b"4".to_vec()),
            ("changes".to_owned(), changes.as_bytes().to_vec()),
        ];
        ChangeEvent::from_entry(id(event_id), &fields, Some("t")).expect("a valid entry")
    }

    /// A mask hiding `salary`, made anew each time (as for two users).
    fn no_salary() -> Option<Arc<ReadMask>> {
        ReadMask::new(true, vec!["salary".to_owned()]).map(Arc::new)
    }

    async fn live(hub: &Hub, id: &str, mask: Option<Arc<ReadMask>>) -> OutboxReceiver {
        let (ob, rx) = subscriber(id, 1 << 20);
        hub.join("t", ob, mask, None).await.expect("join");
        hub.activate("t", id);
        rx
    }

    #[tokio::test]
    async fn one_permission_class_shares_one_masked_frame_and_never_sees_the_hidden_value() {
        let hub = hub();
        let mut hr = live(&hub, "hr", None).await;
        let mut intern1 = live(&hub, "i1", no_salary()).await;
        let mut intern2 = live(&hub, "i2", no_salary()).await;
        hub.deliver(
            "t",
            vec![salary_event(
                "6-0",
                r#"[{"fieldId":"salary","newValue":91234},{"fieldId":"name","newValue":"Ann"}]"#,
            )],
        );
        let full = hr.try_next().unwrap();
        assert!(String::from_utf8_lossy(&full).contains("91234"));
        let (a, b) = (intern1.try_next().unwrap(), intern2.try_next().unwrap());
        assert_eq!(a.as_ptr(), b.as_ptr(), "one frame for the class");
        let text = String::from_utf8_lossy(&a);
        assert!(
            !text.contains("91234") && !text.contains("salary"),
            "{text}"
        );
        assert!(text.contains("Ann"));
    }

    #[tokio::test]
    async fn an_event_of_hidden_fields_only_reaches_the_class_without_changes() {
        let hub = hub();
        let mut intern = live(&hub, "i1", no_salary()).await;
        hub.deliver(
            "t",
            vec![salary_event(
                "6-0",
                r#"[{"fieldId":"salary","newValue":91234}]"#,
            )],
        );
        let frame: Value = serde_json::from_slice(&intern.try_next().unwrap()).unwrap();
        assert_eq!(frame[1]["changes"], serde_json::json!([]));
        assert_eq!(frame[1]["version"], 4);
    }

    #[tokio::test]
    async fn a_class_that_masking_leaves_untouched_shares_the_full_frame() {
        let hub = hub();
        let mut hr = live(&hub, "hr", None).await;
        let mut intern = live(&hub, "i1", no_salary()).await;
        hub.deliver(
            "t",
            vec![salary_event(
                "6-0",
                r#"[{"fieldId":"name","newValue":"Ann"}]"#,
            )],
        );
        let (a, b) = (hr.try_next().unwrap(), intern.try_next().unwrap());
        assert_eq!(a.as_ptr(), b.as_ptr());
    }

    #[tokio::test]
    async fn a_cursor_on_a_hidden_field_is_not_relayed_to_the_class() {
        let hub = hub();
        let mut hr = live(&hub, "hr", None).await;
        let mut intern = live(&hub, "i1", no_salary()).await;
        let notice = |field: &str| Notice {
            event: "cursor_position".to_owned(),
            data: serde_json::json!({"userId": "u", "tableId": "t", "cursor": {"recordId": "r", "fieldId": field}}),
            origin: Some("other".to_owned()),
        };
        hub.notify("t", notice("salary"));
        hub.notify("t", notice("name"));
        assert_eq!(std::iter::from_fn(|| hr.try_next()).count(), 2);
        let seen: Vec<_> = std::iter::from_fn(|| intern.try_next()).collect();
        assert_eq!(seen.len(), 1);
        assert!(String::from_utf8_lossy(&seen[0]).contains("name"));
    }

    fn open_tasks() -> Option<Scope> {
        let f = serde_json::json!({"field": "status", "op": "eq", "value": "open"});
        let view = Arc::new(crate::filter::Filter::parse(&f, "filter").expect("a filter"));
        Scope::of(None, Some(("open-tasks", Some(view))), "ann")
    }

    fn status_event(event_id: &str, version: u64, old: &str, new: &str) -> ChangeEvent {
        owner_event(event_id, version, "status", old, new)
    }

    fn stored(version: u64, status: &str) -> HashMap<String, RecordState> {
        let fields = serde_json::json!({"status": status, "title": "T"});
        let state = RecordState {
            record_id: "r".into(),
            version,
            deleted: false,
            fields: fields.as_object().cloned().unwrap_or_default(),
        };
        HashMap::from([("r".to_owned(), state)])
    }

    fn frame_of(rx: &mut OutboxReceiver) -> Value {
        serde_json::from_slice(&rx.try_next().expect("a frame")).expect("JSON")
    }

    #[tokio::test]
    async fn a_view_subscriber_gets_enter_change_and_leave_as_a_record_moves_through_its_view() {
        let hub = hub();
        let (ob, mut rx) = subscriber("c1", 1 << 20);
        hub.join("t", ob, None, open_tasks()).await.expect("join");
        hub.activate("t", "c1");
        assert!(hub.wants_states("t"));
        hub.deliver_with_states(
            "t",
            vec![status_event("6-0", 2, "done", "open")],
            &stored(2, "open"),
        );
        let entered = frame_of(&mut rx);
        assert_eq!(entered[0], "record_entered_view");
        assert_eq!(
            entered[1],
            serde_json::json!({"tableId": "t", "viewId": "open-tasks", "eventId": "6-0",
                "record": {"recordId": "r", "version": 2, "deleted": false,
                    "fields": {"status": "open", "title": "T"}}})
        );
        hub.deliver_with_states(
            "t",
            vec![status_event("7-0", 3, "open", "open")],
            &stored(3, "open"),
        );
        assert_eq!(frame_of(&mut rx)[0], "record_change");
        hub.deliver_with_states(
            "t",
            vec![status_event("8-0", 4, "open", "done")],
            &stored(4, "done"),
        );
        assert_eq!(
            frame_of(&mut rx),
            serde_json::json!(["record_left_view", {"tableId": "t", "viewId": "open-tasks",
                "recordId": "r", "eventId": "8-0"}])
        );
        hub.deliver_with_states(
            "t",
            vec![status_event("9-0", 5, "done", "later")],
            &stored(5, "later"),
        );
        assert!(rx.try_next().is_none(), "nothing while outside the view");
    }

    #[tokio::test]
    async fn an_unfiltered_subscriber_beside_a_view_keeps_the_plain_change() {
        let hub = hub();
        let mut all = live(&hub, "all", None).await;
        let (ob, mut view) = subscriber("v", 1 << 20);
        hub.join("t", ob, None, open_tasks()).await.expect("join");
        hub.activate("t", "v");
        hub.deliver_with_states(
            "t",
            vec![status_event("6-0", 2, "open", "done")],
            &stored(2, "done"),
        );
        assert_eq!(frame_of(&mut all)[0], "record_change");
        assert_eq!(frame_of(&mut view)[0], "record_left_view");
        hub.unsubscribe("t", "v").await;
        assert!(!hub.wants_states("t"), "no filtered cohort left");
    }

    fn owner_event(event_id: &str, version: u64, field: &str, old: &str, new: &str) -> ChangeEvent {
        let changes = format!(r#"[{{"fieldId":"{field}","oldValue":"{old}","newValue":"{new}"}}]"#);
        let fields = vec![
            ("type".to_owned(), b"update".to_vec()),
            ("entityType".to_owned(), b"record".to_vec()),
            ("entityId".to_owned(), b"r".to_vec()),
            ("userId".to_owned(), b"u".to_vec()),
            ("version".to_owned(), version.to_string().into_bytes()),
            ("changes".to_owned(), changes.into_bytes()),
        ];
        ChangeEvent::from_entry(id(event_id), &fields, Some("t")).expect("a valid entry")
    }

    /// A subscriber of "t" whose row grant is `rows`.
    async fn with_rows(hub: &Hub, user: &str, rows: serde_json::Value) -> OutboxReceiver {
        let rows = Arc::new(crate::filter::Filter::parse(&rows, "rows").expect("a filter"));
        let (ob, rx) = subscriber(user, 1 << 20);
        hub.join("t", ob, None, Scope::of(Some(rows), None, user))
            .await
            .expect("join");
        hub.activate("t", user);
        rx
    }

    async fn owner_of_rows(hub: &Hub, user: &str) -> OutboxReceiver {
        let f = serde_json::json!({"field": "owner", "op": "eq", "value": "$user"});
        with_rows(hub, user, f).await
    }

    #[tokio::test]
    async fn a_record_moved_again_before_its_state_was_read_still_leaves_its_old_owner() {
        let hub = hub();
        let mut ann = owner_of_rows(&hub, "ann").await;
        let mut bob = owner_of_rows(&hub, "bob").await;
        let now = |owner: &str| {
            let fields = serde_json::json!({"owner": owner, "note": "b"});
            let state = RecordState {
                record_id: "r".into(),
                version: 3,
                deleted: false,
                fields: fields.as_object().cloned().unwrap_or_default(),
            };
            HashMap::from([("r".to_owned(), state)])
        };
        // v2 edits the note of ann's record; v3 gives it to bob before the
        // tailer read v2's batch's state.
        hub.deliver_with_states(
            "t",
            vec![owner_event("6-0", 2, "note", "a", "b")],
            &now("bob"),
        );
        let entered = frame_of(&mut bob);
        assert_eq!(entered[0], "record_entered_view");
        assert_eq!(entered[1]["record"]["version"], 3, "the stored state");
        hub.deliver_with_states(
            "t",
            vec![owner_event("7-0", 3, "owner", "ann", "bob")],
            &now("bob"),
        );
        assert_eq!(frame_of(&mut ann)[0], "record_left_view");
        assert!(bob.try_next().is_none(), "bob already holds version 3");
        hub.deliver_with_states("t", vec![owner_event("8-0", 4, "note", "b", "c")], &{
            let mut s = now("bob");
            if let Some(r) = s.get_mut("r") {
                r.version = 4;
            }
            s
        });
        assert_eq!(frame_of(&mut bob)[0], "record_change", "exact again");
        assert!(ann.try_next().is_none());
    }

    fn placed_notice(event: &str, data: Value) -> Notice {
        serde_json::from_value(serde_json::json!({"event": event, "origin": "x", "data": data}))
            .expect("a notice")
    }

    #[tokio::test]
    async fn a_row_grant_subscriber_is_not_sent_viewports_naming_records() {
        let hub = hub();
        let mut ann = owner_of_rows(&hub, "ann").await;
        let data = serde_json::json!({"userId": "u", "tableId": "t",
            "viewport": {"recordIds": ["hidden-r9"]}});
        hub.notify("t", placed_notice("user_viewport", data));
        assert!(ann.try_next().is_none(), "a viewport names records");
    }

    #[tokio::test]
    async fn a_row_grant_subscriber_sees_a_returning_user_without_where_they_point() {
        let hub = hub();
        let mut ann = owner_of_rows(&hub, "ann").await;
        let data = serde_json::json!({"userId": "u", "tableId": "t", "color": "#000",
            "cursor": {"recordId": "hidden-r9", "fieldId": "f"},
            "selection": {"startRecordId": "hidden-r9", "startFieldId": "f",
                "endRecordId": "hidden-r9", "endFieldId": "f"},
            "editing": [{"recordId": "hidden-r9", "fieldId": "f"}],
            "viewport": {"recordIds": ["hidden-r9"]}});
        for event in ["user_reconnected", "user_joined"] {
            hub.notify("t", placed_notice(event, data.clone()));
            let frame = frame_of(&mut ann);
            assert_eq!(frame[0], event);
            assert_eq!(frame[1]["userId"], "u");
            assert!(
                !frame.to_string().contains("hidden-r9"),
                "{event} names no record: {frame}"
            );
        }
    }

    /// A subscriber whose row grant hides the secret records.
    async fn not_secret(hub: &Hub, user: &str) -> OutboxReceiver {
        let f = serde_json::json!({"not": {"field": "secret", "op": "eq", "value": true}});
        with_rows(hub, user, f).await
    }

    #[tokio::test]
    async fn a_record_whose_state_could_not_be_read_sends_no_value_under_a_filter() {
        let hub = hub();
        let mut ann = not_secret(&hub, "ann").await;
        // The record is secret; its state was not read (a failed read): the
        // event alone does not say so.
        hub.deliver_with_states(
            "t",
            vec![owner_event("6-0", 2, "note", "a", "classified")],
            &HashMap::new(),
        );
        while let Some(bytes) = ann.try_next() {
            let frame: Value = serde_json::from_slice(&bytes).expect("JSON");
            assert!(
                !frame.to_string().contains("classified"),
                "no value of a record it cannot judge: {frame}"
            );
        }
    }

    #[tokio::test]
    async fn a_record_moved_out_by_an_event_without_old_values_still_leaves_its_owner() {
        let hub = hub();
        let mut ann = owner_of_rows(&hub, "ann").await;
        // A change too large for its old values: the entry omits them, so
        // it does not say the record was ann's before.
        let changes =
            r#"[{"fieldId":"owner","oldValueOmitted":true,"oldVersion":1,"newValue":"bob"}]"#;
        let fields = vec![
            ("type".to_owned(), b"update".to_vec()),
            ("entityType".to_owned(), b"record".to_vec()),
            ("entityId".to_owned(), b"r".to_vec()),
            ("userId".to_owned(), b"u".to_vec()),
            ("version".to_owned(), b"2".to_vec()),
            ("changes".to_owned(), changes.as_bytes().to_vec()),
        ];
        let e = ChangeEvent::from_entry(id("6-0"), &fields, Some("t")).expect("a valid entry");
        let state = RecordState {
            record_id: "r".into(),
            version: 2,
            deleted: false,
            fields: serde_json::json!({"owner": "bob"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        hub.deliver_with_states("t", vec![e], &HashMap::from([("r".to_owned(), state)]));
        let frame = frame_of(&mut ann);
        assert_eq!(frame[0], "record_left_view", "{frame}");
    }
}
