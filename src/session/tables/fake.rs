//! An in-memory connection and store for the tests of the table
//! subscriptions: streams of entries, a presence set, the hub as the set
//! of streams the connection is registered on, the per-user count, and
//! one call that fails on demand. What a join took and gave back can be
//! read off it after the fact.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::Value;

use super::port::{Bounds, Conn};
use super::BaseSubscription;
use crate::auth::Identity;
use crate::grant::{BaseGrants, Grants, ReadMask};
use crate::protocol::framing::WS_JSON;
use crate::protocol::messages::SubscribeReq;
use crate::protocol::{Framing, StreamId};
use crate::session::reply::{Reply, Then};
use crate::store::history::Position;
use crate::store::presence::Joined;
use crate::store::session_port::TableStore;
use crate::store::tailer::Entry;
use crate::store::StoreError;

/// A call of the connection or its store, to make one fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Call {
    HubJoin,
    Presence,
    Position,
    Recent,
    MayReadBase,
}

/// The store: each stream's entries, who is present where, and the call
/// (on which stream) that fails.
#[derive(Default)]
pub(super) struct FakeStore {
    pub(super) streams: HashMap<String, Vec<Entry>>,
    pub(super) present: Mutex<HashSet<(String, String)>>,
    pub(super) failing: Mutex<Option<(Call, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeStore {
    /// An error when `call` on `stream` is the one made to fail.
    fn check(&self, call: Call, stream: &str) -> Result<(), StoreError> {
        match &*lock(&self.failing) {
            Some((c, s)) if *c == call && s == stream => {
                Err(StoreError::Reply(format!("{call:?} on {stream} failed")))
            }
            _ => Ok(()),
        }
    }

    fn entries(&self, stream: &str) -> &[Entry] {
        self.streams.get(stream).map_or(&[], Vec::as_slice)
    }
}

impl TableStore for FakeStore {
    async fn join_presence(
        &self,
        table: &str,
        conn: &str,
        doc: &Value,
    ) -> Result<Joined, StoreError> {
        self.check(Call::Presence, table)?;
        lock(&self.present).insert((table.to_owned(), conn.to_owned()));
        Ok(Joined {
            status: "joined".to_owned(),
            color: "#336699".to_owned(),
            users: vec![doc.clone()],
        })
    }

    async fn leave_presence(&self, table: &str, conn: &str, _: &str) -> Result<i64, StoreError> {
        lock(&self.present).remove(&(table.to_owned(), conn.to_owned()));
        Ok(0)
    }

    async fn position(&self, table: &str, _: StreamId) -> Result<Position, StoreError> {
        self.check(Call::Position, table)?;
        Ok(Position::Replayable)
    }

    async fn size(
        &self,
        table: &str,
        after: StreamId,
        until: StreamId,
        _: usize,
        _: usize,
    ) -> Result<(usize, usize), StoreError> {
        let n = self.range(table, after, until, usize::MAX, 0).await?.len();
        Ok((n, n * 64))
    }

    async fn recent_events(
        &self,
        table: &str,
        until: StreamId,
        count: usize,
        _: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.check(Call::Recent, table)?;
        let upto: Vec<Entry> = self
            .entries(table)
            .iter()
            .filter(|(id, _)| *id <= until)
            .cloned()
            .collect();
        Ok(upto[upto.len().saturating_sub(count)..].to_vec())
    }

    async fn range(
        &self,
        table: &str,
        after: StreamId,
        until: StreamId,
        count: usize,
        _: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let entries = self.entries(table).iter();
        let inside = entries.filter(|(id, _)| *id > after && *id <= until);
        Ok(inside.take(count).cloned().collect())
    }
}

/// The connection: user `u` reading everything, its tables and bases,
/// the streams it is registered on in the hub (each at `cursor`), and how
/// many places its user holds.
pub(super) struct FakeConn {
    pub(super) store: FakeStore,
    pub(super) user: Option<Identity>,
    pub(super) tables: HashMap<String, StreamId>,
    pub(super) bases: HashMap<String, BaseSubscription>,
    pub(super) in_hub: Mutex<HashSet<String>>,
    pub(super) places: AtomicUsize,
    pub(super) cursor: StreamId,
}

impl FakeConn {
    /// A connection of user `u` to a store holding `entries` (ids `N-0`)
    /// of each of `streams`, whose last is the hub's cursor.
    pub(super) fn new(streams: &[&str], entries: u64) -> FakeConn {
        let store = FakeStore {
            streams: streams
                .iter()
                .map(|s| (s.to_string(), (1..=entries).map(entry).collect()))
                .collect(),
            ..FakeStore::default()
        };
        FakeConn {
            store,
            user: Some(Identity {
                user_id: "u".to_owned(),
                user_name: "U".to_owned(),
                avatar_url: None,
                grants: Grants::all(),
                bases: BaseGrants::default(),
                expires_at: None,
            }),
            tables: HashMap::new(),
            bases: HashMap::new(),
            in_hub: Mutex::new(HashSet::new()),
            places: AtomicUsize::new(0),
            cursor: id(entries),
        }
    }

    /// Makes `call` on `stream` fail from now on.
    pub(super) fn fail(&self, call: Call, stream: &str) {
        *lock(&self.store.failing) = Some((call, stream.to_owned()));
    }

    /// The streams the connection is registered on in the hub, sorted.
    pub(super) fn hub(&self) -> Vec<String> {
        let mut streams: Vec<String> = lock(&self.in_hub).iter().cloned().collect();
        streams.sort();
        streams
    }

    /// The tables the connection is present in.
    pub(super) fn present(&self) -> Vec<String> {
        let present = lock(&self.store.present);
        present.iter().map(|(t, _)| t.clone()).collect()
    }

    pub(super) fn places(&self) -> usize {
        self.places.load(Ordering::SeqCst)
    }
}

impl Conn for FakeConn {
    type Store = FakeStore;

    fn store(&self) -> &FakeStore {
        &self.store
    }

    fn conn_id(&self) -> &str {
        "c1"
    }

    fn framing(&self) -> &'static dyn Framing {
        &WS_JSON
    }

    fn user(&self) -> Option<&Identity> {
        self.user.as_ref()
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            max_subscriptions: 100,
            max_subscriptions_per_user: 100,
            recent_changes: 50,
            max_page_bytes: 1 << 20,
        }
    }

    fn tables(&self) -> &HashMap<String, StreamId> {
        &self.tables
    }

    fn tables_mut(&mut self) -> &mut HashMap<String, StreamId> {
        &mut self.tables
    }

    fn bases(&self) -> &HashMap<String, BaseSubscription> {
        &self.bases
    }

    fn bases_mut(&mut self) -> &mut HashMap<String, BaseSubscription> {
        &mut self.bases
    }

    fn place_added(&self, _: &str) -> bool {
        self.places.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn place_removed(&self, _: &str) {
        self.places.fetch_sub(1, Ordering::SeqCst);
    }

    async fn hub_join(
        &self,
        stream: &str,
        _: Option<Arc<ReadMask>>,
        _: Option<crate::cohort::Scope>,
    ) -> Result<StreamId, StoreError> {
        self.store.check(Call::HubJoin, stream)?;
        lock(&self.in_hub).insert(stream.to_owned());
        Ok(self.cursor)
    }

    async fn hub_leave(&self, stream: &str) {
        lock(&self.in_hub).remove(stream);
    }

    async fn may_read_base(&self, table: &str, _: &str) -> Result<bool, StoreError> {
        self.store.check(Call::MayReadBase, table)?;
        Ok(true)
    }

    fn forget_coalesced(&mut self, _: &str) {}

    fn expire_later(&self, _: &str, _: String) {}
}

/// Stream id `n-0`.
pub(super) fn id(n: u64) -> StreamId {
    StreamId { ms: n, seq: 0 }
}

/// A valid record update with id `n-0`.
fn entry(n: u64) -> Entry {
    let fields = [
        ("type", "update"),
        ("entityType", "record"),
        ("entityId", "r1"),
        ("userId", "u"),
    ];
    let fields = fields.map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()));
    (id(n), fields.to_vec())
}

/// A subscribe to `table`, from `last` (a stream id) when given.
pub(super) fn subscribe_req(table: &str, last: Option<&str>) -> SubscribeReq {
    SubscribeReq {
        table_id: table.to_owned(),
        view_id: None,
        base_id: None,
        last_event_id: last.map(str::to_owned),
        base_last_event_id: None,
        relay: crate::protocol::messages::RelayScope::All,
    }
}

/// The ack of a join that must succeed, and its steps (see [`steps`]).
pub(super) fn answered(reply: Reply) -> (Value, Vec<String>) {
    match reply {
        Ok(answer) => {
            let then = steps(&answer.then);
            (answer.result, then)
        }
        Err(e) => panic!("the join failed: {e}"),
    }
}

/// The steps after an ack, each as a word: a frame's event name and, for
/// a list, its events' ids (`recent_changes 1-0 2-0`), `replay (A, B]`
/// with its closing frame's name, or `activate T`.
pub(super) fn steps(then: &[Then]) -> Vec<String> {
    then.iter()
        .map(|t| match t {
            Then::Frame(bytes) => frame_word(bytes),
            Then::Replay {
                table,
                after,
                until,
                done,
            } => {
                let done = done.as_ref().map(frame_word).unwrap_or_default();
                format!("replay {table} ({after}, {until}] {done}")
                    .trim_end()
                    .to_owned()
            }
            Then::Activate(table) => format!("activate {table}"),
        })
        .collect()
}

/// A JSON frame `[event, data]` as `event` and the ids of its events.
fn frame_word(bytes: &Bytes) -> String {
    let frame: Value = serde_json::from_slice(bytes).unwrap_or_default();
    let mut word = frame[0].as_str().unwrap_or("?").to_owned();
    if let Some(events) = frame[1].as_array().filter(|_| word != "table_users") {
        for e in events {
            word.push(' ');
            word.push_str(e["id"].as_str().unwrap_or("?"));
        }
    }
    word
}
