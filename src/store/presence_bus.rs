//! The presence bus: this sidecar's subscription to the sharded pub/sub
//! channel (`SSUBSCRIBE <p>:{T}:presence`) of every table it serves. The
//! same channel carries the commit doorbell (`{"event": "ring"}`, or the
//! committed entry itself, see [`super::ring`]), handed to the tailer.
//!
//! Data flow: the presence functions `SPUBLISH` a notice `{event, data,
//! origin}`; Redis pushes it to every subscribed sidecar; [`PresenceBus`]
//! hands it to the hub, which encodes it once per encoding and queues it to
//! the table's local subscribers except the origin connection.
//!
//! One RESP3 connection carries all channels (one `SSUBSCRIBE` per channel,
//! as cluster slots require). If it drops, the bus reconnects and
//! subscribes to every channel again.
//!
//! Pushes wait in a bounded queue ([`PUSH_QUEUE`]): when the hub falls that
//! far behind, notices are dropped and counted (a cursor moves again; a
//! missed doorbell is caught by the tailer's sweep) rather than growing
//! memory; a disconnection is never lost (it is flagged aside).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::EventHandler;
use super::ring;
use super::tailer::TailerHandle;
use super::{Store, StoreError};
use crate::backoff::{Backoff, RECONNECT_MAX};

#[derive(Clone)]
pub struct PresenceBus {
    shared: Arc<Shared>,
    /// Rung by `ring` notices (the commit doorbell on the same channel).
    tailer: TailerHandle,
}

struct Shared {
    store: Arc<Store>,
    tables: Mutex<HashSet<String>>,
    conn: tokio::sync::Mutex<Option<BusConn>>,
    pushes: Mutex<Option<mpsc::Receiver<PushInfo>>>,
    push_tx: PushSender,
}

/// Pushes waiting for the bus task, at most.
pub const PUSH_QUEUE: usize = 16_384;
/// Bytes of the pushes waiting for the bus task, at most: a doorbell may
/// carry a 4 KiB entry (`super::ring`), so the count alone would let the
/// queue hold far more.
pub const PUSH_BYTES: usize = 16 << 20;

/// Delays between attempts to reconnect the bus: 50 ms doubling to 2 s.
/// Presence notices and commit doorbells are missed while it is down, so
/// its first retry comes sooner than [`Backoff::reconnect`]'s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(50), RECONNECT_MAX);

/// The bounded push queue's sending side, handed to redis-rs.
#[derive(Clone)]
pub struct PushSender {
    tx: mpsc::Sender<PushInfo>,
    /// Bytes of the pushes queued now (see [`PUSH_BYTES`]).
    queued: Arc<AtomicUsize>,
    /// Set when a disconnection push found the queue full.
    disconnected: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

impl PushSender {
    fn new(capacity: usize) -> (PushSender, mpsc::Receiver<PushInfo>) {
        let (tx, rx) = mpsc::channel(capacity);
        let sender = PushSender {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            disconnected: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(tokio::sync::Notify::new()),
        };
        (sender, rx)
    }
}

impl redis::aio::AsyncPushSender for PushSender {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        let disconnection = info.kind == PushKind::Disconnection;
        let bytes = push_bytes(&info);
        if !disconnection && self.queued.load(Ordering::Acquire) + bytes > PUSH_BYTES {
            crate::metrics::presence_notice_dropped();
            return Ok(());
        }
        match self.tx.try_send(info) {
            Ok(()) => {
                self.queued.fetch_add(bytes, Ordering::AcqRel);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) if disconnection => {
                self.disconnected.store(true, Ordering::Release);
                self.wake.notify_one();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                crate::metrics::presence_notice_dropped();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(redis::aio::SendError),
        }
    }
}

/// The payload bytes a push holds (what [`PUSH_BYTES`] counts).
fn push_bytes(info: &PushInfo) -> usize {
    info.data
        .iter()
        .map(|v| match v {
            Value::BulkString(b) => b.len(),
            _ => 0,
        })
        .sum()
}

use super::events::Notice;

impl PresenceBus {
    pub fn new(store: Arc<Store>, tailer: TailerHandle) -> Result<PresenceBus, StoreError> {
        let (push_tx, push_rx) = PushSender::new(PUSH_QUEUE);
        Ok(PresenceBus {
            tailer,
            shared: Arc::new(Shared {
                store,
                tables: Mutex::new(HashSet::new()),
                conn: tokio::sync::Mutex::new(None),
                pushes: Mutex::new(Some(push_rx)),
                push_tx,
            }),
        })
    }

    async fn connection(&self) -> Result<BusConn, StoreError> {
        let mut guard = self.shared.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let mut conn = BusConn::open(&self.shared.store, self.shared.push_tx.clone()).await?;
        let tables: Vec<String> = lock(&self.shared.tables).iter().cloned().collect();
        for t in tables {
            conn.subscribe(&self.shared.store.keys.presence_channel(&t), true)
                .await?;
        }
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Subscribes to `table`'s channel; returns once Redis confirmed it.
    pub async fn add(&self, table: &str) -> Result<(), StoreError> {
        lock(&self.shared.tables).insert(table.to_owned());
        let mut conn = self.connection().await?;
        let channel = self.shared.store.keys.presence_channel(table);
        let result = conn.subscribe(&channel, true).await;
        if result.is_err() {
            self.drop_connection().await;
        }
        result
    }

    /// Unsubscribes from `table`'s channel (best effort).
    pub async fn remove(&self, table: &str) {
        lock(&self.shared.tables).remove(table);
        if let Ok(mut conn) = self.connection().await {
            let channel = self.shared.store.keys.presence_channel(table);
            if conn.subscribe(&channel, false).await.is_err() {
                self.drop_connection().await;
            }
        }
    }

    async fn drop_connection(&self) {
        *self.shared.conn.lock().await = None;
    }

    /// Starts the task that dispatches notices to the hub and restores the
    /// subscriptions after a disconnect.
    pub fn spawn(
        &self,
        hub: Arc<dyn EventHandler>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) {
        let Some(mut rx) = lock(&self.shared.pushes).take() else {
            return;
        };
        let bus = self.clone();
        let flags = self.shared.push_tx.clone();
        tracker.spawn(async move {
            loop {
                let push = tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = flags.wake.notified() => None,
                    p = rx.recv() => match p {
                        Some(p) => Some(p),
                        None => return,
                    },
                };
                if flags.disconnected.swap(false, Ordering::AcqRel) {
                    bus.reconnect(&cancel).await;
                }
                let Some(push) = push else { continue };
                flags.queued.fetch_sub(push_bytes(&push), Ordering::AcqRel);
                match push.kind {
                    PushKind::SMessage | PushKind::Message => bus.dispatch(hub.as_ref(), push.data),
                    PushKind::Disconnection => bus.reconnect(&cancel).await,
                    _ => {}
                }
            }
        });
    }

    fn dispatch(&self, hub: &dyn EventHandler, data: Vec<Value>) {
        let mut it = data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (it.next(), it.next())
        else {
            return;
        };
        let Some(table) = std::str::from_utf8(&channel)
            .ok()
            .and_then(|c| self.shared.store.keys.table_of_channel(c))
        else {
            return;
        };
        // The doorbell, once per commit: known bytes, no JSON parse; or
        // the entry itself (`ring`), delivered without a stream read.
        if payload == ring::BARE {
            self.tailer.ring(&table);
            return;
        }
        if ring::may_carry_entry(&payload) {
            if let Some(entry) = ring::entry(&payload) {
                self.tailer.ring_entry(&table, entry);
                return;
            }
        }
        match serde_json::from_slice::<Notice>(&payload) {
            Ok(notice) if notice.event == "ring" => self.tailer.ring(&table),
            Ok(notice) => hub.notify(&table, notice),
            Err(e) => tracing::warn!(table, error = %e, "skipping a malformed presence notice"),
        }
    }

    async fn reconnect(&self, cancel: &CancellationToken) {
        tracing::warn!("presence bus disconnected; reconnecting");
        self.drop_connection().await;
        let mut backoff = RECONNECT;
        while !cancel.is_cancelled() {
            if lock(&self.shared.tables).is_empty() {
                return; // connects on the next add
            }
            match self.connection().await {
                Ok(_) => {
                    crate::metrics::redis_reconnect();
                    tracing::info!("presence bus reconnected");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "presence bus cannot reconnect yet"),
            }
            if !backoff.wait(cancel).await {
                return;
            }
        }
    }
}

/// The bus's RESP3 connection: to one Redis, or to a cluster (where each
/// channel is subscribed on the node owning its slot).
#[derive(Clone)]
enum BusConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl BusConn {
    async fn open(store: &Store, pushes: PushSender) -> Result<BusConn, StoreError> {
        if store.is_cluster() {
            let client = super::cluster_client(&store.urls(), Some(pushes))?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(StoreError::from_redis)?;
            return Ok(BusConn::Cluster(conn));
        }
        let url = store.primary();
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(StoreError::Config)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client =
            redis::Client::open(info.set_redis_settings(settings)).map_err(StoreError::Config)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_push_sender(pushes);
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(StoreError::from_redis)?;
        Ok(BusConn::Single(conn))
    }

    /// `SSUBSCRIBE` (or `SUNSUBSCRIBE`) one channel. One channel per
    /// command: the connection matches one confirmation to it.
    async fn subscribe(&mut self, channel: &str, on: bool) -> Result<(), StoreError> {
        let result = match self {
            BusConn::Single(c) => redis::cmd(if on { "SSUBSCRIBE" } else { "SUNSUBSCRIBE" })
                .arg(channel)
                .query_async::<Value>(c)
                .await
                .map(|_| ()),
            BusConn::Cluster(c) if on => c.ssubscribe(channel).await,
            BusConn::Cluster(c) => c.sunsubscribe(channel).await,
        };
        result.map_err(StoreError::from_redis)
    }
}

use crate::locks::lock;

#[cfg(test)]
mod tests {
    use super::*;
    use redis::aio::AsyncPushSender;

    fn push(kind: PushKind) -> PushInfo {
        PushInfo { kind, data: vec![] }
    }

    #[test]
    fn a_full_push_queue_drops_notices_but_never_a_disconnection() {
        let (sender, mut rx) = PushSender::new(1);
        assert!(sender.send(push(PushKind::SMessage)).is_ok());
        assert!(
            sender.send(push(PushKind::SMessage)).is_ok(),
            "dropped, not an error"
        );
        assert!(!sender.disconnected.load(Ordering::Acquire));
        assert!(sender.send(push(PushKind::Disconnection)).is_ok());
        assert!(sender.disconnected.load(Ordering::Acquire), "flagged aside");
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "only one was queued");
    }

    #[test]
    fn pushes_past_the_byte_bound_are_dropped_however_few() {
        let (sender, mut rx) = PushSender::new(PUSH_QUEUE);
        let big = || PushInfo {
            kind: PushKind::SMessage,
            data: vec![Value::BulkString(vec![b'x'; PUSH_BYTES / 2])],
        };
        for _ in 0..3 {
            assert!(sender.send(big()).is_ok());
        }
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "the third passed the byte bound");
    }

    #[test]
    fn doorbell_notice_has_no_data() {
        let n: Notice = serde_json::from_str(r#"{"event":"ring"}"#).unwrap();
        assert_eq!(n.event, "ring");
        assert!(n.data.is_null());
    }
}
