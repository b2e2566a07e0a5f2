//! Starting and stopping to serve a table on this sidecar, in one place:
//! the bus subscription to its channel, the consumer group at the stream's
//! end, and the tailer's registration (and the reverse on stop). The hub
//! registers the table between the first two and the last
//! ([`TableLifecycle::start`], then [`TableLifecycle::tail`]), so every
//! entry the tailer reads has a table to go to.
//!
//! Starts and stops of one table are serialized by a striped lock (one of
//! [`STRIPES`] mutexes, picked by the table id's hash), so a quick
//! unsubscribe/subscribe never races the group's removal, while a slow
//! start of one table (or a Redis reconnect re-subscribing every channel)
//! does not stall the subscribes of the others.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{Mutex, MutexGuard};

use super::presence_bus::PresenceBus;
use super::tailer::TailerHandle;
use super::{groups, Store, StoreError};
use crate::change::StreamId;

/// Locks over the tables: enough that unrelated tables rarely share one.
pub const STRIPES: usize = 64;

/// A table's start and stop, as the hub sees them (a fake in its tests).
pub trait TableLifecycle: Send + Sync + 'static {
    /// Serializes the starts and stops of `table`.
    fn lock<'a>(&'a self, table: &str) -> BoxFuture<'a, MutexGuard<'a, ()>>;
    /// Starts serving `table`; returns the cursor (the stream's last id).
    /// Nothing is read yet: see [`TableLifecycle::tail`].
    fn start<'a>(&'a self, table: &'a str) -> BoxFuture<'a, Result<StreamId, StoreError>>;
    /// Starts reading `table`'s stream, once the hub has registered the
    /// table at the cursor [`TableLifecycle::start`] returned. A read that
    /// came back before that would be handed to no one while it moved the
    /// group past its entries: they would be lost to this sidecar.
    fn tail(&self, table: &str);
    /// Stops serving `table` (best effort, logged).
    fn stop<'a>(&'a self, table: &'a str) -> BoxFuture<'a, ()>;
}

pub struct Serving {
    store: Arc<Store>,
    tailer: TailerHandle,
    bus: PresenceBus,
    stripes: Vec<Mutex<()>>,
}

impl Serving {
    pub fn new(store: Arc<Store>, tailer: TailerHandle, bus: PresenceBus) -> Serving {
        Serving {
            store,
            tailer,
            bus,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl TableLifecycle for Serving {
    fn lock<'a>(&'a self, table: &str) -> BoxFuture<'a, MutexGuard<'a, ()>> {
        let mut h = DefaultHasher::new();
        table.hash(&mut h);
        let stripe = &self.stripes[(h.finish() as usize) % STRIPES];
        Box::pin(stripe.lock())
    }

    fn start<'a>(&'a self, table: &'a str) -> BoxFuture<'a, Result<StreamId, StoreError>> {
        Box::pin(async move {
            // A failed subscribe drops the bus connection; the next one opens
            // a fresh one, so one more try rides out a connection that broke
            // (e.g. Redis restarted) without failing the user's subscribe.
            if let Err(e) = self.bus.add(table).await {
                tracing::warn!(table, error = %e, "bus subscribe failed; trying once more");
                self.bus.add(table).await?;
            }
            let cursor = match groups::start_serving(&self.store, table).await {
                Ok(c) => c,
                Err(e) => {
                    self.bus.remove(table).await;
                    return Err(e);
                }
            };
            Ok(cursor)
        })
    }

    fn tail(&self, table: &str) {
        self.tailer.add(table);
    }

    fn stop<'a>(&'a self, table: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.tailer.remove(table);
            self.bus.remove(table).await;
            if let Err(e) = groups::stop_serving(&self.store, table).await {
                tracing::warn!(table, error = %e, "could not remove the consumer group");
            }
        })
    }
}
