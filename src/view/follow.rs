//! How [`Views`] follows the tables' streams, without the tailer or the hub
//! knowing of views: two wrappers set up once at start (`lib.rs`).
//!
//! - [`ViewEvents`] stands between the tailer and the hub: a batch of events
//!   read from a table's stream is handed on in order, split at each `view`
//!   event, which is applied to [`Views`] after the events before it were
//!   fanned out and before those after it are: every event is fanned out
//!   under the filters in force at its place in the stream. The `view`
//!   event itself is handed on too (subscribers of the table get it as any
//!   other event).
//! - [`ViewServing`] wraps a table's start and stop: what [`Views`] kept of
//!   a table is dropped when this sidecar starts or stops reading its
//!   stream (it may have missed `view` events meanwhile).

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::MutexGuard;

use super::{is_filter_event, Views};
use crate::change::{ChangeEvent, StreamId};
use crate::store::events::{EventHandler, Notice};
use crate::store::records::RecordState;
use crate::store::serving::TableLifecycle;
use crate::store::StoreError;

/// The tailer's event handler: applies `view` events, then hands on.
pub struct ViewEvents {
    inner: Arc<dyn EventHandler>,
    views: Arc<Views>,
}

impl ViewEvents {
    pub fn new(inner: Arc<dyn EventHandler>, views: Arc<Views>) -> ViewEvents {
        ViewEvents { inner, views }
    }
}

impl EventHandler for ViewEvents {
    fn deliver(&self, table: &str, events: Vec<ChangeEvent>) {
        if !events.iter().any(is_filter_event) {
            self.inner.deliver(table, events);
            return;
        }
        let mut part = Vec::with_capacity(events.len());
        for e in events {
            if is_filter_event(&e) {
                if !part.is_empty() {
                    self.inner.deliver(table, std::mem::take(&mut part));
                }
                self.views.apply(table, std::slice::from_ref(&e));
            }
            part.push(e);
        }
        if !part.is_empty() {
            self.inner.deliver(table, part);
        }
    }

    fn notify(&self, table: &str, notice: Notice) {
        self.inner.notify(table, notice);
    }

    fn wants_states(&self, table: &str) -> bool {
        self.inner.wants_states(table)
    }

    /// As [`ViewEvents::deliver`], each part with the records' states
    /// (for the filtered fan-out, `src/hub/filtered.rs`).
    fn deliver_with_states(
        &self,
        table: &str,
        events: Vec<ChangeEvent>,
        states: HashMap<String, RecordState>,
    ) {
        if !events.iter().any(is_filter_event) {
            self.inner.deliver_with_states(table, events, states);
            return;
        }
        let mut part = Vec::with_capacity(events.len());
        for e in events {
            if is_filter_event(&e) {
                if !part.is_empty() {
                    let part = std::mem::take(&mut part);
                    self.inner.deliver_with_states(table, part, states.clone());
                }
                self.views.apply(table, std::slice::from_ref(&e));
            }
            part.push(e);
        }
        if !part.is_empty() {
            self.inner.deliver_with_states(table, part, states);
        }
    }

    /// A `view` event is left to the read path, which applies it in
    /// stream order ([`ViewEvents::deliver`]).
    fn deliver_following(
        &self,
        table: &str,
        prev: StreamId,
        id: StreamId,
        events: Vec<ChangeEvent>,
    ) -> bool {
        if events.iter().any(is_filter_event) {
            return false;
        }
        self.inner.deliver_following(table, prev, id, events)
    }

    fn cursor(&self, table: &str) -> Option<StreamId> {
        self.inner.cursor(table)
    }
}

/// A table's start and stop, telling [`Views`].
pub struct ViewServing {
    inner: Arc<dyn TableLifecycle>,
    views: Arc<Views>,
}

impl ViewServing {
    pub fn new(inner: Arc<dyn TableLifecycle>, views: Arc<Views>) -> ViewServing {
        ViewServing { inner, views }
    }
}

impl TableLifecycle for ViewServing {
    fn lock<'a>(&'a self, table: &str) -> BoxFuture<'a, MutexGuard<'a, ()>> {
        self.inner.lock(table)
    }

    fn start<'a>(&'a self, table: &'a str) -> BoxFuture<'a, Result<StreamId, StoreError>> {
        Box::pin(async move {
            let cursor = self.inner.start(table).await?;
            // After the group exists: a load from here on reads the key
            // at or after the stream's place where reading starts.
            self.views.serving(table, true);
            Ok(cursor)
        })
    }

    fn tail(&self, table: &str) {
        self.inner.tail(table);
    }

    fn stop<'a>(&'a self, table: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.views.serving(table, false);
            self.inner.stop(table).await;
        })
    }
}
