//! Server-side views (PROTOCOL 3.5): each table's view filters as this
//! sidecar knows them. A view's filter is stored at `<p>:{T}:view:<viewId>`
//! and announced by a `view` event in the table's stream
//! (`store::views`); the tailer applies those events here in stream order
//! ([`follow::ViewEvents`], before the hub fans the events after them
//! out), and a subscription or a `load_records {viewId}` asks [`Views::load`]
//! for the filter it needs (read from Redis on first use, with the view's
//! version, so an older event is never applied over it). A view without a
//! filter, or an unknown one, is the whole table.
//!
//! What is kept is only trusted while the table's stream is read here: a
//! table's views are forgotten when this sidecar starts or stops serving
//! it ([`follow::ViewServing`]); a table not served here is read from its
//! key on every use. Entries are bounded in number ([`MAX_VIEWS`]); past
//! it a view is read from its key on every use instead of kept. A view id
//! never set is not kept either (clients name view ids freely).

pub mod follow;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::change::ChangeEvent;
use crate::filter::Filter;
use crate::store::{Store, StoreError};

/// Most views (over all tables) this sidecar keeps.
pub const MAX_VIEWS: usize = 10_000;

/// The `type` of a `view` event that sets its filter (`rtsync_view_set`).
pub const FILTER_EVENT: &str = "filter";

/// A view as last applied: its filter (`None`: the whole table) and the
/// version that set it.
#[derive(Clone)]
struct Known {
    filter: Option<Arc<Filter>>,
    version: u64,
}

#[derive(Default)]
struct Inner {
    /// Views by table, then view id.
    known: HashMap<String, HashMap<String, Known>>,
    count: usize,
    /// Tables served here, each with the generation it started in: a load
    /// that began before a start (or stop) keeps nothing.
    served: HashMap<String, u64>,
    generation: u64,
}

impl Inner {
    fn forget(&mut self, table: &str) {
        if let Some(views) = self.known.remove(table) {
            self.count -= views.len();
        }
    }

    /// Keeps `known` for the view unless what is kept is as new or newer;
    /// nothing when full.
    fn keep(&mut self, table: &str, view: &str, known: Known) {
        let full = self.count >= MAX_VIEWS;
        let views = self.known.entry(table.to_owned()).or_default();
        match views.get_mut(view) {
            Some(old) if old.version < known.version => *old = known,
            Some(_) => {}
            None if !full => {
                views.insert(view.to_owned(), known);
                self.count += 1;
            }
            None => {
                crate::metrics::view_not_kept();
            }
        }
        if views.is_empty() {
            self.known.remove(table);
        }
    }
}

/// View filters by (table, view).
#[derive(Default)]
pub struct Views {
    inner: Mutex<Inner>,
}

impl Views {
    pub fn new() -> Views {
        Views::default()
    }

    /// The view's filter as last applied; `None` means the whole table
    /// (no filter, or a view this sidecar has not loaded: call
    /// [`Views::load`] first).
    pub fn filter(&self, table: &str, view: &str) -> Option<Arc<Filter>> {
        let inner = crate::locks::lock(&self.inner);
        inner.known.get(table)?.get(view)?.filter.clone()
    }

    /// Applies a view's filter outright (tests, tools): kept at version 0,
    /// so any `view` event of the view replaces it.
    pub fn set(&self, table: &str, view: &str, filter: Option<Arc<Filter>>) {
        let mut inner = crate::locks::lock(&self.inner);
        let known = Known { filter, version: 0 };
        match inner.known.get_mut(table).and_then(|v| v.get_mut(view)) {
            Some(old) => *old = known,
            None => inner.keep(table, view, known),
        }
    }

    /// The view's filter: as kept, or read from its key (kept when the
    /// table is served here). `None` is the whole table.
    pub async fn load(
        &self,
        store: &Store,
        table: &str,
        view: &str,
    ) -> Result<Option<Arc<Filter>>, StoreError> {
        let generation = {
            let inner = crate::locks::lock(&self.inner);
            let generation = inner.served.get(table).copied();
            if generation.is_some() {
                if let Some(k) = inner.known.get(table).and_then(|v| v.get(view)) {
                    return Ok(k.filter.clone());
                }
            }
            generation
        };
        let stored = crate::store::views::get(store, table, view).await?;
        let filter = stored
            .filter
            .as_deref()
            .and_then(|text| parse_stored(table, view, text));
        Ok(self.keep_read(table, view, generation, filter, stored.version))
    }

    /// What [`Views::load`] read (`version` 0: a view never set), kept when
    /// the table is still served in the same generation, unless the view
    /// was never set: any client may name any view id, and unknown ones
    /// must not fill the [`MAX_VIEWS`] entries real views need. Returns the
    /// filter to use (a kept one may be newer than the read).
    fn keep_read(
        &self,
        table: &str,
        view: &str,
        generation: Option<u64>,
        filter: Option<Arc<Filter>>,
        version: u64,
    ) -> Option<Arc<Filter>> {
        let mut inner = crate::locks::lock(&self.inner);
        if generation.is_none() || inner.served.get(table).copied() != generation {
            return filter;
        }
        if version > 0 {
            let known = Known {
                filter: filter.clone(),
                version,
            };
            inner.keep(table, view, known);
        }
        match inner.known.get(table).and_then(|v| v.get(view)) {
            Some(k) => k.filter.clone(), // an event newer than the read
            None => filter,
        }
    }

    /// Applies the `view` events among `events` (read from `table`'s
    /// stream, in order); an event older than what is kept changes nothing.
    pub fn apply(&self, table: &str, events: &[ChangeEvent]) {
        let mut inner = crate::locks::lock(&self.inner);
        if !inner.served.contains_key(table) {
            return;
        }
        for e in events.iter().filter(|e| is_filter_event(e)) {
            let filter = event_filter(e)
                .as_ref()
                .and_then(|v| parse_or_log(table, &e.entity_id, v));
            let version = e.version;
            inner.keep(table, &e.entity_id, Known { filter, version });
            crate::metrics::view_applied();
            tracing::info!(table, view = %e.entity_id, version, id = %e.id, "view filter applied");
        }
    }

    /// This sidecar starts (or stops) reading `table`'s stream: what was
    /// kept of its views may have missed events, and is dropped.
    fn serving(&self, table: &str, on: bool) {
        let mut inner = crate::locks::lock(&self.inner);
        inner.generation += 1;
        let generation = inner.generation;
        inner.forget(table);
        if on {
            inner.served.insert(table.to_owned(), generation);
        } else {
            inner.served.remove(table);
        }
    }
}

/// Whether `e` sets a view's filter.
pub fn is_filter_event(e: &ChangeEvent) -> bool {
    e.entity_type == "view" && e.kind == FILTER_EVENT
}

/// The filter a `view` event sets: its `changes[0].newValue` (absent or
/// null: none).
fn event_filter(e: &ChangeEvent) -> Option<Value> {
    let change = e.changes.as_ref()?.as_array()?.first()?;
    match change.get("newValue")? {
        Value::Null => None,
        v => Some(v.clone()),
    }
}

fn parse_stored(table: &str, view: &str, text: &str) -> Option<Arc<Filter>> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => parse_or_log(table, view, &v),
        Err(e) => {
            crate::metrics::view_unreadable();
            tracing::warn!(table, view, error = %e, "a stored view filter is not JSON; taken as no filter");
            None
        }
    }
}

/// A filter written by someone who did not check it (a producer calling
/// `rtsync_view_set` directly) is taken as no filter, logged and counted.
fn parse_or_log(table: &str, view: &str, v: &Value) -> Option<Arc<Filter>> {
    match Filter::parse(v, "filter") {
        Ok(f) => Some(Arc::new(f)),
        Err(e) => {
            crate::metrics::view_unreadable();
            tracing::warn!(table, view, error = %e, "a view filter cannot be read; taken as no filter");
            None
        }
    }
}

#[cfg(test)]
mod tests;
