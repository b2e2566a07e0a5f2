//! Server-side views (PROTOCOL 3.5): each table's view filters as this
//! sidecar knows them. A view's filter is stored at `<p>:{T}:view:<viewId>`
//! and announced by a `view` event in the table's stream; the tailer applies
//! those events here in stream order, and a subscription or a
//! `load_records {viewId}` reads the filter it needs from here (loading it
//! from Redis on first use). A view without a filter, or an unknown one, is
//! the whole table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::filter::Filter;

/// Views by (table, view); `None` is a view known to have no filter.
#[derive(Default)]
pub struct Views {
    known: Mutex<HashMap<(String, String), Option<Arc<Filter>>>>,
}

impl Views {
    pub fn new() -> Views {
        Views::default()
    }

    /// The view's filter as last applied; `None` means the whole table
    /// (no filter, or a view this sidecar has not seen).
    pub fn filter(&self, table: &str, view: &str) -> Option<Arc<Filter>> {
        let known = crate::locks::lock(&self.known);
        known
            .get(&(table.to_owned(), view.to_owned()))
            .cloned()
            .flatten()
    }

    /// Applies a view's filter (from its `view` event, in stream order, or
    /// from its key on first use).
    pub fn set(&self, table: &str, view: &str, filter: Option<Arc<Filter>>) {
        let mut known = crate::locks::lock(&self.known);
        known.insert((table.to_owned(), view.to_owned()), filter);
    }
}
