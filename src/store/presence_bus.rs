//! The presence bus: this sidecar's subscription to the sharded pub/sub
//! channel (`SSUBSCRIBE <p>:{T}:presence`) of every table it serves. The
//! same channel carries the commit doorbell (`{"event": "ring"}`), handed to
//! the tailer.
//!
//! Data flow: the presence functions `SPUBLISH` a notice `{event, data,
//! origin}`; Redis pushes it to every subscribed sidecar; [`PresenceBus`]
//! hands it to the hub, which encodes it once per encoding and queues it to
//! the table's local subscribers except the origin connection.
//!
//! One RESP3 connection carries all channels (one `SSUBSCRIBE` per channel,
//! as cluster slots require). If it drops, the bus reconnects and
//! subscribes to every channel again.

use std::collections::HashSet;
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

use super::tailer::TailerHandle;
use super::{Store, StoreError};
use crate::hub::Hub;

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
    pushes: Mutex<Option<mpsc::UnboundedReceiver<PushInfo>>>,
    push_tx: mpsc::UnboundedSender<PushInfo>,
}

/// A notice as published by the presence functions.
#[derive(serde::Deserialize)]
pub struct Notice {
    pub event: String,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub origin: Option<String>,
}

impl PresenceBus {
    pub fn new(store: Arc<Store>, tailer: TailerHandle) -> Result<PresenceBus, StoreError> {
        let (push_tx, push_rx) = mpsc::unbounded_channel();
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
    pub fn spawn(&self, hub: Arc<Hub>, tracker: &TaskTracker, cancel: CancellationToken) {
        let Some(mut rx) = lock(&self.shared.pushes).take() else {
            return;
        };
        let bus = self.clone();
        tracker.spawn(async move {
            loop {
                let push = tokio::select! {
                    _ = cancel.cancelled() => return,
                    p = rx.recv() => p,
                };
                let Some(push) = push else { return };
                match push.kind {
                    PushKind::SMessage | PushKind::Message => bus.dispatch(&hub, push.data),
                    PushKind::Disconnection => bus.reconnect(&cancel).await,
                    _ => {}
                }
            }
        });
    }

    fn dispatch(&self, hub: &Hub, data: Vec<Value>) {
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
        match serde_json::from_slice::<Notice>(&payload) {
            Ok(notice) if notice.event == "ring" => self.tailer.ring(&table),
            Ok(notice) => hub.notify(&table, notice),
            Err(e) => tracing::warn!(table, error = %e, "skipping a malformed presence notice"),
        }
    }

    async fn reconnect(&self, cancel: &CancellationToken) {
        tracing::warn!("presence bus disconnected; reconnecting");
        self.drop_connection().await;
        let mut delay = Duration::from_millis(50);
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
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
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
    async fn open(
        store: &Store,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> Result<BusConn, StoreError> {
        if store.is_cluster() {
            let client = super::cluster_client(store.urls(), Some(pushes))?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(StoreError::from_redis)?;
            return Ok(BusConn::Cluster(conn));
        }
        let url = store.urls().first().cloned().unwrap_or_default();
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::Notice;

    #[test]
    fn doorbell_notice_has_no_data() {
        let n: Notice = serde_json::from_str(r#"{"event":"ring"}"#).unwrap();
        assert_eq!(n.event, "ring");
        assert!(n.data.is_null());
    }
}
