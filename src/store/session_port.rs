//! What a connection's table subscriptions need from Redis, as a narrow
//! trait ([`TableStore`]): presence join and leave, and the reads of a
//! table's history (its position, size, recent events and ranges). The
//! session's join, history and leave code is written against it, so the
//! order of a join and its rollback are tested against an in-memory fake,
//! as the hub is against [`super::serving::TableLifecycle`].
//!
//! Data flow: `session::tables` → [`TableStore`] → (for [`Store`]) the
//! functions of [`super::presence`] and [`super::history`], unchanged.

use std::future::Future;

use serde_json::Value;

use super::history::{self, Position};
use super::presence::{self, Joined};
use super::tailer::Entry;
use super::{Store, StoreError};
use crate::change::StreamId;

/// The store as a table subscription sees it (a fake in the session's
/// tests). Each method is the store function of the same name.
pub trait TableStore: Send + Sync {
    /// Joins `conn` to `table`'s presence with `doc` ([`presence::join`]).
    fn join_presence(
        &self,
        table: &str,
        conn: &str,
        doc: &Value,
    ) -> impl Future<Output = Result<Joined, StoreError>> + Send;
    /// Removes `conn` of `user` from `table`'s presence; how many
    /// connections of the user remain ([`presence::leave`]).
    fn leave_presence(
        &self,
        table: &str,
        conn: &str,
        user: &str,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Where `seen` lies in `table`'s stream ([`history::position`]).
    fn position(
        &self,
        table: &str,
        seen: StreamId,
    ) -> impl Future<Output = Result<Position, StoreError>> + Send;
    /// How many events and bytes lie in `(after, until]`, bounded
    /// ([`history::size`]).
    fn size(
        &self,
        table: &str,
        after: StreamId,
        until: StreamId,
        max_count: usize,
        max_bytes: usize,
    ) -> impl Future<Output = Result<(usize, usize), StoreError>> + Send;
    /// The latest events up to `until`, oldest first, bounded
    /// ([`history::recent_events`]).
    fn recent_events(
        &self,
        table: &str,
        until: StreamId,
        count: usize,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;
    /// The events in `(after, until]`, oldest first, bounded
    /// ([`history::range`]).
    fn range(
        &self,
        table: &str,
        after: StreamId,
        until: StreamId,
        count: usize,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;
}

impl TableStore for Store {
    async fn join_presence(
        &self,
        table: &str,
        conn: &str,
        doc: &Value,
    ) -> Result<Joined, StoreError> {
        presence::join(self, table, conn, doc).await
    }

    async fn leave_presence(&self, table: &str, conn: &str, user: &str) -> Result<i64, StoreError> {
        presence::leave(self, table, conn, user).await
    }

    async fn position(&self, table: &str, seen: StreamId) -> Result<Position, StoreError> {
        history::position(self, table, seen).await
    }

    async fn size(
        &self,
        table: &str,
        after: StreamId,
        until: StreamId,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<(usize, usize), StoreError> {
        history::size(self, table, after, until, max_count, max_bytes).await
    }

    async fn recent_events(
        &self,
        table: &str,
        until: StreamId,
        count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        history::recent_events(self, table, until, count, max_bytes).await
    }

    async fn range(
        &self,
        table: &str,
        after: StreamId,
        until: StreamId,
        count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        history::range(self, table, after, until, count, max_bytes).await
    }
}
