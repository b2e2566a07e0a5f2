//! What a table subscription needs of its connection, as one trait
//! ([`Conn`]): the connection's identity and its tables and bases, the
//! caps' per-user count, the hub (register pending, leave), the store
//! ([`TableStore`]) and the few things only a live session does (the
//! cursor coalescer, the presence grace timer). [`Session`] implements it
//! by delegating; the tests implement it in memory, so the order of a
//! join, its history and its rollback are checked without Redis.
//!
//! Data flow: `subscribe` / `recover` / `leave` → `join` / `base` /
//! `history` → [`Conn`] → (for a [`Session`]) the app's hub, counts and
//! store.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use super::BaseSubscription;
use crate::auth::Identity;
use crate::cohort::Scope;
use crate::filter::Filter;
use crate::grant::ReadMask;
use crate::protocol::{Framing, RequestError, StreamId};
use crate::session::{base_access, reply, Session};
use crate::store::session_port::TableStore;
use crate::store::StoreError;

/// The bounds a join reads from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// `RTS_MAX_SUBSCRIPTIONS`: tables and bases per connection.
    pub max_subscriptions: usize,
    /// `RTS_MAX_SUBSCRIPTIONS_PER_USER`, for its error message.
    pub max_subscriptions_per_user: usize,
    /// `RTS_RECENT_CHANGES`: most events of `recent_changes`.
    pub recent_changes: usize,
    /// `RTS_MAX_PAGE_BYTES`: most bytes of `recent_changes`.
    pub max_page_bytes: usize,
}

/// A connection as its table subscriptions see it.
pub trait Conn: Send + Sync {
    type Store: TableStore;
    /// Where presence and history are read.
    fn store(&self) -> &Self::Store;
    fn conn_id(&self) -> &str;
    fn framing(&self) -> &'static dyn Framing;
    /// Who is authenticated (`None` before `authenticate`).
    fn user(&self) -> Option<&Identity>;
    fn bounds(&self) -> Bounds;
    /// Subscribed tables and each subscription's start.
    fn tables(&self) -> &HashMap<String, StreamId>;
    fn tables_mut(&mut self) -> &mut HashMap<String, StreamId>;
    /// Bases whose stream the connection reads.
    fn bases(&self) -> &HashMap<String, BaseSubscription>;
    fn bases_mut(&mut self) -> &mut HashMap<String, BaseSubscription>;
    /// Counts one more subscription of `user` on this sidecar; false (and
    /// nothing counted) past its cap.
    fn place_added(&self, user: &str) -> bool;
    /// Gives back one subscription of `user` on this sidecar.
    fn place_removed(&self, user: &str);
    /// Registers the connection pending on `stream` in the hub; the
    /// subscription's start.
    fn hub_join(
        &self,
        stream: &str,
        mask: Option<Arc<ReadMask>>,
        scope: Option<Scope>,
    ) -> impl Future<Output = Result<StreamId, StoreError>> + Send;
    /// v1.3 (3.5): the filter of `table`'s view `view` as this sidecar
    /// knows it; `None` is the whole table.
    fn view_filter(
        &self,
        _table: &str,
        _view: &str,
    ) -> impl Future<Output = Result<Option<Arc<Filter>>, StoreError>> + Send {
        async { Ok(None) }
    }
    /// Removes the connection from `stream` in the hub.
    fn hub_leave(&self, stream: &str) -> impl Future<Output = ()> + Send;
    /// Whether the connection may read base `base`'s events through its
    /// subscription to `table`.
    fn may_read_base(
        &self,
        table: &str,
        base: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Drops the cursor updates waiting to be relayed for `table`.
    fn forget_coalesced(&mut self, table: &str);
    /// `user` has no connection left in `table`'s presence: announce them
    /// gone after the grace period unless they come back.
    fn expire_later(&self, table: &str, user: String);
}

impl Conn for Session {
    type Store = crate::store::Store;

    fn store(&self) -> &Self::Store {
        &self.app.store
    }

    fn conn_id(&self) -> &str {
        &self.outbox.conn_id
    }

    fn framing(&self) -> &'static dyn Framing {
        self.outbox.framing()
    }

    fn user(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    fn bounds(&self) -> Bounds {
        let config = &self.app.config;
        Bounds {
            max_subscriptions: config.max_subscriptions.get(),
            max_subscriptions_per_user: config.max_subscriptions_per_user.get(),
            recent_changes: config.recent_changes,
            max_page_bytes: config.max_page_bytes,
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

    fn place_added(&self, user: &str) -> bool {
        self.app.subscription_added(user)
    }

    fn place_removed(&self, user: &str) {
        self.app.subscription_removed(user);
    }

    async fn hub_join(
        &self,
        stream: &str,
        mask: Option<Arc<ReadMask>>,
        scope: Option<Scope>,
    ) -> Result<StreamId, StoreError> {
        self.app
            .hub
            .join(stream, self.outbox.clone(), mask, scope)
            .await
    }

    async fn view_filter(
        &self,
        table: &str,
        view: &str,
    ) -> Result<Option<Arc<Filter>>, StoreError> {
        self.app.views.load(&self.app.store, table, view).await
    }

    async fn hub_leave(&self, stream: &str) {
        self.app.hub.unsubscribe(stream, &self.outbox.conn_id).await;
    }

    async fn may_read_base(&self, table: &str, base: &str) -> Result<bool, StoreError> {
        base_access::may_read(self, table, base).await
    }

    fn forget_coalesced(&mut self, table: &str) {
        self.coalescer.forget(table);
    }

    fn expire_later(&self, table: &str, user: String) {
        let app = self.app.clone();
        let grace = app.config.presence_grace;
        let table = table.to_owned();
        let app2 = app.clone();
        app.tasks.spawn(async move {
            tokio::select! {
                _ = app2.shutdown.cancelled() => return,
                _ = tokio::time::sleep(grace) => {}
            }
            let grace_ms = grace.as_millis() as u64;
            if let Err(e) =
                crate::store::presence::expire(&app2.store, &table, &user, grace_ms).await
            {
                tracing::warn!(table, error = %e, "could not expire presence; the sweeper will");
            }
        });
    }
}

/// The fields of `stream` the connection may not read (`None`: it reads
/// them all), as [`reply::read_mask`] says for a session.
pub(crate) fn read_mask<C: Conn>(conn: &C, stream: &str) -> Option<Arc<ReadMask>> {
    reply::mask_of(conn.user(), stream)
}

/// Who is authenticated, or the error of a request sent before
/// `authenticate` (as [`reply::identity`] says for a session).
pub(crate) fn user_of<C: Conn>(conn: &C) -> Result<&Identity, RequestError> {
    reply::signed_in(conn.user())
}
