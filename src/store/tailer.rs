//! The tailer: reads every table stream that has local subscribers through
//! this sidecar's consumer group and hands the entries to the hub.
//!
//! Tables are spread over a few readers by hash. Each reader owns one Redis
//! connection (never shared with commands: a blocking read would stall them)
//! and issues one `XREADGROUP ... BLOCK ... NOACK STREAMS k1..kn > .. >` over
//! all its tables, so a reader's cost is one call per wake-up, not one per
//! table. `NOACK` keeps no pending-entries list: the group is only a cursor;
//! clients get durability from `recover_connection`. When a table is added,
//! the blocked read is interrupted with `CLIENT UNBLOCK` so the new table is
//! read at once; the block timeout bounds the delay if that races.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{groups, Store, StoreError};
use crate::hub::Hub;
use crate::protocol::event::ChangeEvent;

/// How long one read waits for entries.
const BLOCK_MS: u64 = 1000;
/// Pause after a read that returned entries, so that under load each read
/// (and each frame to a subscriber) carries more events: fewer round trips
/// and syscalls for at most this much added latency.
const GATHER: Duration = Duration::from_millis(2);
/// Most entries per stream per read; the rest come on the next read.
const COUNT: usize = 512;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Shared control of the readers: which tables each one reads.
#[derive(Clone)]
pub struct TailerHandle {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<Store>,
    readers: Vec<Slot>,
}

struct Slot {
    tables: Mutex<BTreeSet<Arc<str>>>,
    generation: AtomicU64,
    changed: Notify,
    client_id: AtomicI64,
    blocked: AtomicBool,
}

impl TailerHandle {
    pub fn new(store: Arc<Store>, readers: usize) -> TailerHandle {
        let readers = (0..readers.max(1))
            .map(|_| Slot {
                tables: Mutex::new(BTreeSet::new()),
                generation: AtomicU64::new(0),
                changed: Notify::new(),
                client_id: AtomicI64::new(0),
                blocked: AtomicBool::new(false),
            })
            .collect();
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
    pub async fn add(&self, table: &str) {
        let slot = self.slot(table);
        lock(&slot.tables).insert(Arc::from(table));
        slot.generation.fetch_add(1, Ordering::AcqRel);
        slot.changed.notify_one();
        let id = slot.client_id.load(Ordering::Acquire);
        if id > 0 && slot.blocked.load(Ordering::Acquire) {
            let mut conn = self.shared.store.conn();
            let unblock: Result<i64, _> = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(id)
                .query_async(&mut conn)
                .await;
            if let Err(e) = unblock {
                tracing::debug!(error = %e, "could not interrupt a stream read");
            }
        }
    }

    /// Stops reading `table`.
    pub fn remove(&self, table: &str) {
        let slot = self.slot(table);
        lock(&slot.tables).remove(table);
        slot.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Starts one task per reader, owned by `tracker`, ending on `cancel`.
    pub fn spawn(&self, hub: Arc<Hub>, tracker: &TaskTracker, cancel: CancellationToken) {
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
    hub: Arc<Hub>,
    cancel: CancellationToken,
}

impl Reader {
    fn slot(&self) -> &Slot {
        &self.shared.readers[self.index]
    }

    async fn run(self) {
        let mut conn: Option<MultiplexedConnection> = None;
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let tables: Vec<Arc<str>> = lock(&self.slot().tables).iter().cloned().collect();
            if tables.is_empty() {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = self.slot().changed.notified() => continue,
                }
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match self.connect().await {
                    Ok(c) => {
                        if backoff > BACKOFF_MIN {
                            tracing::info!(reader = self.index, "stream reader reconnected");
                            crate::metrics::redis_reconnect();
                        }
                        conn.insert(c)
                    }
                    Err(e) => {
                        tracing::warn!(reader = self.index, error = %e, "stream reader cannot connect");
                        self.pause(&mut backoff).await;
                        continue;
                    }
                },
            };
            match self.read_once(c, &tables).await {
                Ok(true) => {
                    backoff = BACKOFF_MIN;
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(GATHER) => {}
                    }
                }
                Ok(false) => backoff = BACKOFF_MIN,
                Err(ReadError::Cancelled) => return,
                Err(ReadError::Store(e)) => {
                    if e.is_unavailable() {
                        conn = None;
                    }
                    tracing::warn!(reader = self.index, error = %e, "stream read failed");
                    self.pause(&mut backoff).await;
                }
            }
        }
    }

    async fn pause(&self, backoff: &mut Duration) {
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            _ = tokio::time::sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
    }

    async fn connect(&self) -> Result<MultiplexedConnection, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_millis(BLOCK_MS + 3000)));
        let mut conn = self
            .shared
            .store
            .client()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(StoreError::from_redis)?;
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from_redis)?;
        self.slot().client_id.store(id, Ordering::Release);
        Ok(conn)
    }

    async fn read_once(
        &self,
        conn: &mut MultiplexedConnection,
        tables: &[Arc<str>],
    ) -> Result<bool, ReadError> {
        let store = &self.shared.store;
        let generation = self.slot().generation.load(Ordering::Acquire);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&store.instance_id)
            .arg(&store.instance_id)
            .arg("COUNT")
            .arg(COUNT);
        // Block only while the table set is the one we read; a change since
        // the snapshot means the next read must include it.
        cmd.arg("BLOCK").arg(BLOCK_MS);
        cmd.arg("NOACK").arg("STREAMS");
        for t in tables {
            cmd.arg(store.keys.events(t));
        }
        for _ in tables {
            cmd.arg(">");
        }
        self.slot().blocked.store(true, Ordering::Release);
        if self.slot().generation.load(Ordering::Acquire) != generation {
            self.slot().blocked.store(false, Ordering::Release);
            return Ok(false);
        }
        let reply = tokio::select! {
            _ = self.cancel.cancelled() => return Err(ReadError::Cancelled),
            r = cmd.query_async::<Value>(conn) => r,
        };
        self.slot().blocked.store(false, Ordering::Release);
        match reply {
            Ok(value) => Ok(self.dispatch(value)),
            Err(e) if e.code() == Some("NOGROUP") => {
                self.restore_group(&e.to_string()).await;
                Ok(false)
            }
            Err(e) => Err(ReadError::Store(StoreError::from_redis(e))),
        }
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
        tracing::warn!(table, cursor, "consumer group missing; placing it again");
        if let Err(e) = groups::place_group(&self.shared.store, &table, &cursor).await {
            tracing::warn!(table, error = %e, "could not place the consumer group again");
        }
    }

    /// Hands entries to the hub; true when there were any.
    fn dispatch(&self, value: Value) -> bool {
        let mut any = false;
        for (key, entries) in stream_pairs(value) {
            any |= !entries.is_empty();
            let Some(table) = self.shared.store.keys.table_of_events(&key) else {
                continue;
            };
            let mut events = Vec::with_capacity(entries.len());
            for (id, fields) in entries {
                match ChangeEvent::from_entry(&id, &fields, Some(&table)) {
                    Ok(e) => events.push(e),
                    Err(err) => {
                        crate::metrics::entry_skipped();
                        tracing::warn!(table, id, error = %err, "skipping a malformed stream entry");
                    }
                }
            }
            if !events.is_empty() {
                self.hub.deliver(&table, events);
            }
        }
        any
    }
}

enum ReadError {
    Cancelled,
    Store(StoreError),
}

/// A stream entry: its id and its fields.
pub type Entry = (String, Vec<(String, Vec<u8>)>);

/// Parses an `XREAD`/`XREADGROUP` reply (RESP2 array or RESP3 map) into
/// (stream key, entries). Anything unexpected is dropped, never a panic.
pub fn stream_pairs(value: Value) -> Vec<(String, Vec<Entry>)> {
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
        .filter_map(|(k, v)| Some((text(k)?, entries(v))))
        .collect()
}

/// Parses a list of `[id, [field, value, ...]]` entries (also an `XRANGE` reply).
pub fn entries(value: Value) -> Vec<Entry> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut e) = item else {
                return None;
            };
            if e.len() != 2 {
                return None;
            }
            let fields = e.pop()?;
            let id = text(e.pop()?)?;
            let fields = match fields {
                Value::Array(flat) => {
                    let mut out = Vec::with_capacity(flat.len() / 2);
                    let mut it = flat.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        out.push((text(k)?, bytes(v)?));
                    }
                    out
                }
                Value::Map(kv) => kv
                    .into_iter()
                    .filter_map(|(k, v)| Some((text(k)?, bytes(v)?)))
                    .collect(),
                _ => Vec::new(),
            };
            Some((id, fields))
        })
        .collect()
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn text(v: Value) -> Option<String> {
    String::from_utf8(bytes(v)?).ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
