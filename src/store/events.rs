//! What the store hands up: the interface through which the tailer and the
//! presence bus deliver, defined here and implemented by the hub (as
//! centrifuge's broker calls its `BrokerEventHandler`). The store never
//! imports the hub, so the hub can be tested without Redis.

use crate::change::{ChangeEvent, StreamId};

/// A notice as published by the presence functions on a table's channel.
#[derive(serde::Deserialize)]
pub struct Notice {
    pub event: String,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub origin: Option<String>,
}

pub trait EventHandler: Send + Sync + 'static {
    /// Events read from `table`'s stream, in stream order.
    fn deliver(&self, table: &str, events: Vec<ChangeEvent>);

    /// v1.3: whether `table` has filtered subscribers (row grants, views),
    /// so the tailer reads the touched records' states for
    /// [`EventHandler::deliver_with_states`].
    fn wants_states(&self, _table: &str) -> bool {
        false
    }

    /// [`EventHandler::deliver`] with the current states of the records
    /// the events touch (read after the events, one read per batch).
    fn deliver_with_states(
        &self,
        table: &str,
        events: Vec<ChangeEvent>,
        _states: std::collections::HashMap<String, crate::store::records::RecordState>,
    ) {
        self.deliver(table, events);
    }

    /// Entries that came with their doorbells (`super::ring`), following
    /// on from one another in the stream from the one after `prev` to
    /// `id`: delivers `events` (theirs) only if the last event delivered
    /// for `table` is `prev` or one of them, so nothing before them can be
    /// missing. True when they are handled (delivered now, delivered
    /// before, or the table is not served); false when the stream must be
    /// read instead.
    fn deliver_following(
        &self,
        _table: &str,
        _prev: StreamId,
        _id: StreamId,
        _events: Vec<ChangeEvent>,
    ) -> bool {
        false
    }

    /// A presence notice published on `table`'s channel.
    fn notify(&self, table: &str, notice: Notice);

    /// The id of the last event delivered for `table`, while it is served:
    /// where a consumer group goes back to after a lost read.
    fn cursor(&self, table: &str) -> Option<StreamId>;
}
