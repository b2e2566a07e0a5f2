//! The tailer: reads every table stream that has local subscribers through
//! this sidecar's consumer group and hands the entries to the hub.
//!
//! Reads are driven by a doorbell. `rtsync_commit` publishes a tiny `ring`
//! notice on the table's sharded channel, which this sidecar already
//! subscribes to for presence; the presence bus calls [`TailerHandle::ring`]
//! and a reader fetches just the tables that rang, without blocking. A sweep
//! over all tables once a second catches entries that producers appended
//! without ringing (and any ring lost during a reconnect). A small entry
//! comes with its ring (`super::ring`): the reader delivers it without a
//! read when the table's last delivered event is the entry before it, and
//! reads the table otherwise. So a read costs
//! O(tables that changed), not O(tables served), which is what lets one
//! sidecar serve thousands of tables.
//!
//! Tables are spread over a few readers by hash. `NOACK` keeps no
//! pending-entries list: the group is only a cursor; clients get durability
//! from `recover_connection`. A reader that got a full page of a stream
//! reads it again at once. Batching is adaptive: a read whose busiest
//! table had at most one entry is followed by no pause at all (a quiet
//! table's event goes out as soon as it is read: there is nothing to batch
//! it with); a read that found entries piling up (two or more in one
//! table) pauses in proportion to how many arrived since the last read, up
//! to 20 ms, so that under load each read and each frame carries more
//! events.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::EventHandler;
use super::records::{self, RecordState};
use super::ring::EntryRing;
use super::{groups, Store, StoreError};
use crate::backoff::{Backoff, RECONNECT_MAX};
use crate::change::StreamId;
use crate::protocol::event::ChangeEvent;

/// Most entries per stream per read; a full page is read again at once.
const COUNT: usize = 512;
/// Streams per multi-key read.
const KEYS_PER_READ: usize = 500;
/// Byte bound of one read of record states for filtered subscribers
/// (records are bounded by `RTS_MAX_RECORD_BYTES`; the bound only caps
/// a batch of very large ones, whose rest then goes without a state).
const STATE_BYTES: usize = 64 << 20;
/// How often every table is read, rung or not.
const SWEEP: Duration = Duration::from_secs(1);
/// Pause after a read (see the module doc): what each entry of the busiest
/// table beyond the first adds, and the most. The entries one table had in
/// a read are the ones that arrived since the previous read, so they
/// measure its arrival rate over that interval: a quiet table (one entry,
/// or none) is read again as soon as its doorbell rings, with no pause, so
/// its events wait for nothing; a table whose entries pile up (two or more
/// per read) gets a pause that grows with the pile, so each read and each
/// frame of a busy table carries more events, up to [`GATHER_MAX`] (which
/// bounds what batching adds to latency under load).
const GATHER_PER_ENTRY: Duration = Duration::from_micros(1250);
const GATHER_MAX: Duration = Duration::from_millis(20);

/// The pause after a read whose busiest table had `entries` entries:
/// nothing for at most one (nothing to batch with), then
/// [`GATHER_PER_ENTRY`] for each entry beyond the first, capped.
fn gather_pause(entries: usize) -> Duration {
    let beyond = entries.saturating_sub(1).min(1000) as u32;
    GATHER_PER_ENTRY.saturating_mul(beyond).min(GATHER_MAX)
}
/// Delays between failed reads of one reader: 50 ms doubling to 2 s,
/// back to 50 ms once a read works.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), RECONNECT_MAX);

/// Shared control of the readers: which tables each one reads.
#[derive(Clone)]
pub struct TailerHandle {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<Store>,
    readers: Vec<Slot>,
}

#[derive(Default)]
struct Slot {
    tables: Mutex<BTreeSet<Arc<str>>>,
    rung: Mutex<HashSet<Arc<str>>>,
    /// Entries that came with their doorbell, in arrival order, for the
    /// reader to deliver without a read ([`TailerHandle::ring_entry`]).
    carried: Mutex<Vec<(Arc<str>, EntryRing)>>,
    wake: Notify,
}

/// Carried entries waiting for their reader, at most; beyond, a doorbell's
/// entry is dropped and its table read instead (bounded memory).
const CARRIED: usize = 1024;

impl Slot {
    /// Keeps `ring`'s entry for the reader, or, past [`CARRIED`], drops it
    /// and rings its table for a read instead.
    fn carry(&self, table: Arc<str>, ring: EntryRing) {
        let mut carried = lock(&self.carried);
        if carried.len() < CARRIED {
            carried.push((table, ring));
        } else {
            drop(carried);
            lock(&self.rung).insert(table);
        }
    }
}

/// A reader's tables with entries delivered from their doorbells since
/// their last read: their groups trail, and are moved up before it. Only
/// tables still served are kept (each sweep forgets the others), so the set
/// is bounded by the reader's tables.
#[derive(Default)]
struct Trailing(HashSet<Arc<str>>);

impl Trailing {
    fn mark(&mut self, table: &Arc<str>) {
        self.0.insert(table.clone());
    }

    /// The trailing tables of `batch`, no longer marked.
    fn take_in(&mut self, batch: &[Arc<str>]) -> Vec<Arc<str>> {
        if self.0.is_empty() {
            return Vec::new();
        }
        batch
            .iter()
            .filter(|t| self.0.remove(*t))
            .cloned()
            .collect()
    }

    fn keep_served(&mut self, served: &BTreeSet<Arc<str>>) {
        self.0.retain(|t| served.contains(t));
    }
}

impl TailerHandle {
    pub fn new(store: Arc<Store>, readers: usize) -> TailerHandle {
        let readers = (0..readers.max(1)).map(|_| Slot::default()).collect();
        TailerHandle {
            shared: Arc::new(Shared { store, readers }),
        }
    }

    fn slot(&self, table: &str) -> &Slot {
        let mut h = DefaultHasher::new();
        table.hash(&mut h);
        let i = (h.finish() % self.shared.readers.len() as u64) as usize;
        &self.shared.readers[i]
    }

    /// Starts reading `table` (its group must already exist).
    pub fn add(&self, table: &str) {
        let slot = self.slot(table);
        let table: Arc<str> = Arc::from(table);
        lock(&slot.tables).insert(table.clone());
        lock(&slot.rung).insert(table);
        slot.wake.notify_one();
    }

    /// Stops reading `table`.
    pub fn remove(&self, table: &str) {
        let slot = self.slot(table);
        lock(&slot.tables).remove(table);
        lock(&slot.rung).remove(table);
    }

    /// The table's stream has new entries: read it now.
    pub fn ring(&self, table: &str) {
        let slot = self.slot(table);
        let Some(t) = lock(&slot.tables).get(table).cloned() else {
            return; // not served here
        };
        lock(&slot.rung).insert(t);
        slot.wake.notify_one();
    }

    /// The table's stream has a new entry, carried by its doorbell: the
    /// reader delivers it without reading when nothing can be missing
    /// before it (see [`super::ring`]), and reads the table otherwise.
    pub fn ring_entry(&self, table: &str, ring: EntryRing) {
        let slot = self.slot(table);
        let Some(t) = lock(&slot.tables).get(table).cloned() else {
            return; // not served here
        };
        slot.carry(t, ring);
        slot.wake.notify_one();
    }

    /// Starts one task per reader, owned by `tracker`, ending on `cancel`.
    pub fn spawn(
        &self,
        hub: Arc<dyn EventHandler>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) {
        for index in 0..self.shared.readers.len() {
            let reader = Reader {
                shared: self.shared.clone(),
                index,
                hub: hub.clone(),
                cancel: cancel.clone(),
            };
            tracker.spawn(reader.run());
        }
    }
}

struct Reader {
    shared: Arc<Shared>,
    index: usize,
    hub: Arc<dyn EventHandler>,
    cancel: CancellationToken,
}

impl Reader {
    fn slot(&self) -> &Slot {
        &self.shared.readers[self.index]
    }

    async fn run(self) {
        let mut next_sweep = Instant::now() + SWEEP;
        let mut backoff = BACKOFF;
        let mut healthy = true;
        // Tables whose last read failed: Redis may have run it (moving the
        // group past entries) and lost the reply, so the group goes back to
        // the last event the hub delivered before they are read again.
        let mut rewind: HashSet<Arc<str>> = HashSet::new();
        let mut trailing = Trailing::default();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.slot().wake.notified() => {}
                _ = tokio::time::sleep_until(next_sweep) => {}
            }
            let sweep = Instant::now() >= next_sweep;
            let carried = self.deliver_carried(&mut trailing);
            let batch: Vec<Arc<str>> = if sweep {
                next_sweep = Instant::now() + SWEEP;
                lock(&self.slot().rung).clear();
                let tables = lock(&self.slot().tables);
                trailing.keep_served(&tables);
                tables.iter().cloned().collect()
            } else {
                lock(&self.slot().rung).drain().collect()
            };
            if batch.is_empty() {
                if !self.gather(carried).await {
                    return;
                }
                continue;
            }
            if !rewind.is_empty() {
                if let Err(e) = self.rewind(&mut rewind).await {
                    tracing::debug!(reader = self.index, error = %e, "cannot rewind groups yet");
                    self.ring_again(batch);
                    if !backoff.wait(&self.cancel).await {
                        return;
                    }
                    continue;
                }
            }
            self.advance(&batch, &mut trailing).await;
            match self.read(&batch, &mut rewind).await {
                Ok((busiest, full)) => {
                    if !healthy {
                        tracing::info!(reader = self.index, "stream reads work again");
                        crate::metrics::redis_reconnect();
                        healthy = true;
                    }
                    backoff.reset();
                    // A full page is read again at once (catching up).
                    if !full && !self.gather(busiest.max(carried)).await {
                        return;
                    }
                }
                Err(e) => {
                    if healthy {
                        tracing::warn!(reader = self.index, error = %e, "stream read failed; retrying");
                        healthy = false;
                    }
                    // The failed part was rung again: nothing is lost.
                    if !backoff.wait(&self.cancel).await {
                        return;
                    }
                }
            }
        }
    }

    /// Entries piling up mean load: pause to gather more first
    /// ([`gather_pause`] of the most entries one table had); one entry (a
    /// quiet table) means no pause. False when cancelled.
    async fn gather(&self, busiest: usize) -> bool {
        let pause = gather_pause(busiest);
        if pause.is_zero() {
            return true;
        }
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    /// Delivers the entries that came with their doorbells, each table's
    /// in one batch (one frame per subscriber, as a read would), in
    /// arrival order, as far as they follow on from the table's last
    /// delivered event (the hub checks, under the table's lock) and from
    /// one another. A table rung for a read, or whose entries do not
    /// follow on, is read instead: the read returns them and whatever came
    /// before. The most entries one table had (the load, for [`gather`]).
    fn deliver_carried(&self, trailing: &mut Trailing) -> usize {
        let carried = std::mem::take(&mut *lock(&self.slot().carried));
        let mut order: Vec<(Arc<str>, Vec<EntryRing>)> = Vec::new();
        let mut index: HashMap<Arc<str>, usize> = HashMap::new();
        for (table, ring) in carried {
            let i = *index.entry(table.clone()).or_insert_with(|| {
                order.push((table, Vec::new()));
                order.len() - 1
            });
            order[i].1.push(ring);
        }
        let mut busiest = 0;
        for (table, rings) in order {
            busiest = busiest.max(rings.len());
            if lock(&self.slot().rung).contains(&table) {
                continue;
            }
            let (prev, entries, broken) = chain(rings);
            let (Some(last), n) = (entries.last().map(|e| e.0), entries.len()) else {
                continue;
            };
            let events = decode_events(&entries, &table);
            if self.hub.deliver_following(&table, prev, last, events) {
                crate::metrics::ring_entries_delivered(n);
                trailing.mark(&table);
            } else {
                lock(&self.slot().rung).insert(table.clone());
            }
            if broken {
                lock(&self.slot().rung).insert(table);
            }
        }
        busiest
    }

    /// Moves the trailing groups of `batch` to the hub's cursors, all at
    /// once, so the read returns only new entries: a sweep would otherwise
    /// make Redis send a second of entries again (and Redis runs nothing
    /// else meanwhile). A failure only costs that resend.
    async fn advance(&self, batch: &[Arc<str>], trailing: &mut Trailing) {
        let due = trailing.take_in(batch);
        if due.is_empty() {
            return;
        }
        let store = &self.shared.store;
        let moves: Vec<_> = due
            .iter()
            .filter_map(|t| Some((t, self.hub.cursor(t)?)))
            .map(|(t, cursor)| groups::advance_group(store, t, cursor))
            .collect();
        for r in futures_util::future::join_all(moves).await {
            if let Err(e) = r {
                tracing::debug!(reader = self.index, error = %e, "could not move a trailing group");
            }
        }
    }

    fn ring_again(&self, tables: impl IntoIterator<Item = Arc<str>>) {
        let served = lock(&self.slot().tables);
        let mut rung = lock(&self.slot().rung);
        for t in tables {
            if served.contains(&t) {
                rung.insert(t);
            }
        }
        drop(rung);
        drop(served);
        self.slot().wake.notify_one();
    }

    /// Reads new entries of `tables` without blocking and delivers them;
    /// the most entries one table had, and whether a table filled a page. On one Redis, up to 500 streams share one
    /// `XREADGROUP`; in a cluster a multi-key read must stay in one slot, so
    /// each table gets its own command. Either way the commands go out
    /// concurrently on the multiplexed connection.
    async fn read(
        &self,
        tables: &[Arc<str>],
        rewind: &mut HashSet<Arc<str>>,
    ) -> Result<(usize, bool), StoreError> {
        let store = &self.shared.store;
        let per_read = if store.is_cluster() { 1 } else { KEYS_PER_READ };
        let chunks: Vec<&[Arc<str>]> = tables.chunks(per_read).collect();
        let replies =
            futures_util::future::join_all(chunks.iter().map(|c| xreadgroup(store, c))).await;
        let mut busiest = 0;
        let mut full = Vec::new();
        let mut failure = None;
        for (chunk, reply) in chunks.into_iter().zip(replies) {
            let pairs = match reply {
                Ok(p) => p,
                Err(e) if e.code() == Some("NOGROUP") => {
                    self.restore_group(&e.to_string()).await;
                    self.ring_again(chunk.iter().cloned());
                    continue;
                }
                Err(e) => {
                    rewind.extend(chunk.iter().cloned());
                    self.ring_again(chunk.iter().cloned());
                    failure = Some(StoreError::from_redis(e));
                    continue;
                }
            };
            for (key, entries) in pairs {
                let Some(table) = store.keys.table_of_events(&key) else {
                    continue;
                };
                if entries.len() >= COUNT {
                    full.push(Arc::<str>::from(table.as_str()));
                }
                // Entries delivered from their doorbells come again (the
                // group trails them until this read): they are dropped
                // before they are decoded, and only the new ones measure
                // the load.
                let mut entries = entries;
                if let Some(cursor) = self.hub.cursor(&table) {
                    entries.retain(|(id, _)| *id > cursor);
                }
                busiest = busiest.max(entries.len());
                self.deliver(&table, entries).await;
            }
        }
        let any_full = !full.is_empty();
        if any_full {
            self.ring_again(full);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok((busiest, any_full)),
        }
    }

    /// Moves the groups of `tables` back to the hub's cursors.
    async fn rewind(&self, tables: &mut HashSet<Arc<str>>) -> Result<(), StoreError> {
        for table in tables.iter() {
            if let Some(cursor) = self.hub.cursor(table) {
                groups::place_group(&self.shared.store, table, cursor).await?;
            }
        }
        tables.clear();
        Ok(())
    }

    async fn deliver(&self, table: &str, entries: Vec<Entry>) {
        let events = decode_events(&entries, table);
        drop(entries);
        if events.is_empty() {
            return;
        }
        if !self.hub.wants_states(table) {
            self.hub.deliver(table, events);
            return;
        }
        let states = self.states(table, &events).await;
        self.hub.deliver_with_states(table, events, states);
    }

    /// v1.3: the current states of the records `events` touch, for the
    /// filters of the live fan-out: one `rtsync_load` per batch (of at most
    /// [`records::MAX_PAGE`] records), read after the events, so each
    /// state is at least as new as the batch's last event of its record
    /// (`cohort::steps`). A failed read leaves those records without a
    /// state; no value of them goes to filtered subscribers (`hub::filtered`).
    async fn states(&self, table: &str, events: &[ChangeEvent]) -> HashMap<String, RecordState> {
        let mut ids: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for e in events.iter().filter(|e| e.entity_type == "record") {
            if seen.insert(e.entity_id.as_str()) {
                ids.push(e.entity_id.clone());
            }
        }
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(records::MAX_PAGE) {
            let what = records::Load::Ids(chunk.to_vec());
            match records::load(&self.shared.store, table, &what, STATE_BYTES, None).await {
                Ok(page) => out.extend(page.records.into_iter().map(|r| (r.record_id.clone(), r))),
                Err(e) => {
                    crate::metrics::filter_state_read_failed();
                    tracing::warn!(table, error = %e, "reading record states for filtered subscribers failed");
                }
            }
        }
        out
    }

    /// A group vanished (Redis restarted without persistence, or it was
    /// removed): place it again at the hub's cursor, so nothing already
    /// delivered comes again and nothing newer is skipped.
    async fn restore_group(&self, message: &str) {
        let Some(key) = message.split('\'').nth(1) else {
            return;
        };
        let Some(table) = self.shared.store.keys.table_of_events(key) else {
            return;
        };
        let Some(cursor) = self.hub.cursor(&table) else {
            return; // no longer served
        };
        tracing::warn!(table, %cursor, "consumer group missing; placing it again");
        if let Err(e) = groups::place_group(&self.shared.store, &table, cursor).await {
            tracing::warn!(table, error = %e, "could not place the consumer group again");
        }
    }
}

fn xreadgroup_cmd(store: &Store, tables: &[Arc<str>]) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&store.instance_id)
        .arg(&store.instance_id)
        .arg("COUNT")
        .arg(COUNT)
        .arg("NOACK")
        .arg("STREAMS");
    for t in tables {
        cmd.arg(store.keys.events(t));
    }
    for _ in tables {
        cmd.arg(">");
    }
    cmd
}

async fn xreadgroup(
    store: &Store,
    tables: &[Arc<str>],
) -> Result<Vec<(String, Vec<Entry>)>, redis::RedisError> {
    let mut conn = store.conn();
    let reply: Value = xreadgroup_cmd(store, tables).query_async(&mut conn).await?;
    Ok(stream_pairs(reply))
}

/// The change events of entries read from `stream` (a table id or a
/// base's `{B}`); a malformed entry is skipped, counted and logged.
pub fn decode_events(entries: &[Entry], stream: &str) -> Vec<ChangeEvent> {
    entries
        .iter()
        .filter_map(
            |(id, fields)| match ChangeEvent::from_stream_entry(*id, fields, stream) {
                Ok(e) => Some(e),
                Err(err) => {
                    crate::metrics::entry_skipped();
                    tracing::warn!(stream, %id, error = %err, "skipping a malformed stream entry");
                    None
                }
            },
        )
        .collect()
}

/// The entries of `rings` (one table's, in arrival order) that follow on
/// from one another, with the id before the first; whether the chain broke
/// (an entry came that does not follow the one before it: the rest is
/// left to a read).
fn chain(rings: Vec<EntryRing>) -> (StreamId, Vec<Entry>, bool) {
    let mut rings = rings.into_iter();
    let Some(first) = rings.next() else {
        return (StreamId::ZERO, Vec::new(), false);
    };
    let prev = first.prev;
    let mut last = first.entry.0;
    let mut entries = vec![first.entry];
    for ring in rings {
        if ring.prev != last {
            return (prev, entries, true);
        }
        last = ring.entry.0;
        entries.push(ring.entry);
    }
    (prev, entries, false)
}

/// A stream entry and its fields (defined with the doorbell that may
/// carry one, `super::ring`).
pub use super::ring::{Entry, Fields};

/// Parses an `XREAD`/`XREADGROUP` reply (RESP2 array or RESP3 map) into
/// (stream key, entries). Anything unexpected is dropped, never a panic.
pub fn stream_pairs(value: Value) -> Vec<(String, Vec<Entry>)> {
    stream_pairs_with(value, entries)
}

/// [`stream_pairs`] with the entries of each stream parsed by `parse`.
pub fn stream_pairs_with<T>(value: Value, parse: fn(Value) -> Vec<T>) -> Vec<(String, Vec<T>)> {
    let pairs: Vec<(Value, Value)> = match value {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let v = kv.pop()?;
                    let k = kv.pop()?;
                    Some((k, v))
                }
                _ => None,
            })
            .collect(),
        Value::Map(kv) => kv,
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some((text(k)?, parse(v))))
        .collect()
}

/// Parses a list of `[id, [field, value, ...]]` entries (also an `XRANGE` reply).
pub fn entries(value: Value) -> Vec<Entry> {
    held_entries(value)
        .into_iter()
        .map(|(id, fields)| (id, fields.unwrap_or_default()))
        .collect()
}

/// Like [`entries`], but an entry whose fields are gone (`nil`: trimmed
/// while it was pending in a group) keeps its id with `None`.
pub fn held_entries(value: Value) -> Vec<(StreamId, Option<Fields>)> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items.into_iter().filter_map(entry).collect()
}

fn entry(item: Value) -> Option<(StreamId, Option<Fields>)> {
    let Value::Array(mut e) = item else {
        return None;
    };
    if e.len() != 2 {
        return None;
    }
    let fields = e.pop()?;
    // Parsed once, here: the id travels as a StreamId from now on.
    let id = StreamId::parse(&text(e.pop()?)?)?;
    let fields = match fields {
        Value::Array(flat) => {
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((text(k)?, bytes(v)?));
            }
            Some(out)
        }
        Value::Map(kv) => Some(
            kv.into_iter()
                .filter_map(|(k, v)| Some((text(k)?, bytes(v)?)))
                .collect(),
        ),
        _ => None,
    };
    Some((id, fields))
}

/// A reply value's bytes (bulk or simple string, or an integer's digits).
pub fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// A reply value as UTF-8 text.
pub fn text(v: Value) -> Option<String> {
    String::from_utf8(bytes(v)?).ok()
}

use crate::locks::lock;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_of_at_most_one_entry_per_table_is_followed_by_no_pause() {
        assert_eq!(gather_pause(0), Duration::ZERO);
        assert_eq!(gather_pause(1), Duration::ZERO);
    }

    #[test]
    fn the_pause_grows_with_the_entries_beyond_the_first_and_is_capped() {
        assert_eq!(gather_pause(2), Duration::from_micros(1250));
        assert_eq!(gather_pause(9), Duration::from_millis(10));
        assert!(gather_pause(9) > gather_pause(2));
        assert_eq!(gather_pause(17), GATHER_MAX);
        assert_eq!(gather_pause(usize::MAX), GATHER_MAX);
    }

    fn ring(prev: u64, id: u64) -> EntryRing {
        let at = |ms| StreamId { ms, seq: 0 };
        EntryRing {
            prev: at(prev),
            entry: (at(id), Vec::new()),
        }
    }

    #[test]
    fn a_table_no_longer_served_is_forgotten_by_the_next_sweep() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut trailing = Trailing::default();
        trailing.mark(&a);
        trailing.mark(&b);
        trailing.keep_served(&BTreeSet::from([a.clone()]));
        assert_eq!(trailing.take_in(&[a.clone(), b.clone()]), vec![a.clone()]);
        assert!(trailing.take_in(&[a, b]).is_empty(), "taken once");
    }

    #[test]
    fn past_the_carried_bound_an_entry_is_dropped_and_its_table_read() {
        let slot = Slot::default();
        let table: Arc<str> = Arc::from("t");
        for i in 0..CARRIED as u64 {
            slot.carry(table.clone(), ring(i, i + 1));
        }
        assert!(lock(&slot.rung).is_empty());
        slot.carry(table.clone(), ring(CARRIED as u64, CARRIED as u64 + 1));
        assert_eq!(lock(&slot.carried).len(), CARRIED);
        assert!(lock(&slot.rung).contains(&table), "read instead");
    }

    #[test]
    fn carried_entries_that_follow_on_form_one_chain() {
        let (prev, entries, broken) = chain(vec![ring(1, 2), ring(2, 3), ring(3, 4)]);
        assert_eq!(prev.ms, 1);
        assert_eq!(
            entries.iter().map(|e| e.0.ms).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert!(!broken);
    }

    #[test]
    fn a_carried_entry_that_does_not_follow_on_breaks_the_chain() {
        // 3 was never carried (a producer's entry): 4 and after are read.
        let (prev, entries, broken) = chain(vec![ring(1, 2), ring(3, 4), ring(4, 5)]);
        assert_eq!(prev.ms, 1);
        assert_eq!(entries.iter().map(|e| e.0.ms).collect::<Vec<_>>(), [2]);
        assert!(broken);
    }
}
