//! Leaving a table: `unsubscribe_from_table`, and every table when the
//! connection (or its Socket.IO socket) ends. Fan-out stops, bases no
//! other table of the connection needs are left, the places under the
//! caps are given back, and presence loses the connection (the user is
//! announced `user_left` after the grace period if it was their last).
//!
//! Data flow: `route` / the session's end → [`leave_table`] → the hub,
//! the app's counts, `store::presence`.

use super::places::release_place;
use crate::change::ids::base_stream_name;
use crate::protocol::messages::{TableAck, TableReq};
use crate::session::reply::{to_value, Reply};
use crate::session::Session;
use crate::store::presence;

/// `unsubscribe_from_table` (its `tableId` checked already).
pub async fn unsubscribe(session: &mut Session, req: TableReq) -> Reply {
    if session.tables.remove(&req.table_id).is_some() {
        leave_table(session, &req.table_id).await;
    }
    to_value(&TableAck {
        table_id: &req.table_id,
    })
}

/// Ends this connection's subscription to `table`: fan-out stops, and the
/// user's presence loses this connection; when it was their last, they are
/// announced `user_left` after the grace period unless they come back.
pub async fn leave_table(session: &mut Session, table: &str) {
    let app = session.app.clone();
    app.hub.unsubscribe(table, session.conn_id()).await;
    session.coalescer.forget(table);
    // Its bases: a base none of the connection's tables needs is left.
    let mut emptied = Vec::new();
    for (base, sub) in session.bases.iter_mut() {
        if sub.tables.remove(table) && sub.tables.is_empty() {
            emptied.push(base.clone());
        }
    }
    for base in emptied {
        session.bases.remove(&base);
        app.hub
            .unsubscribe(&base_stream_name(&base), session.conn_id())
            .await;
        release_place(session);
    }
    let Some(user) = session.identity.as_ref().map(|i| i.user_id.clone()) else {
        return;
    };
    app.subscription_removed(&user);
    match presence::leave(&app.store, table, session.conn_id(), &user).await {
        Ok(0) => {
            let grace = app.config.presence_grace;
            let table = table.to_owned();
            let app2 = app.clone();
            app.tasks.spawn(async move {
                tokio::select! {
                    _ = app2.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(grace) => {}
                }
                let grace_ms = grace.as_millis() as u64;
                if let Err(e) = presence::expire(&app2.store, &table, &user, grace_ms).await {
                    tracing::warn!(table, error = %e, "could not expire presence; the sweeper will");
                }
            });
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(table, error = %e, "could not leave presence; the sweeper will"),
    }
}
