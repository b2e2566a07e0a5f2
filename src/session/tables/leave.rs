//! Leaving a table: `unsubscribe_from_table`, and every table when the
//! connection (or its Socket.IO socket) ends. Fan-out stops, bases no
//! other table of the connection needs are left, the places under the
//! caps are given back, and presence loses the connection (the user is
//! announced `user_left` after the grace period if it was their last).
//!
//! Data flow: `route` / the session's end → [`leave_table`] → the hub,
//! the app's counts, the store's presence (through `port::Conn`).

use super::places::release_place;
use super::port::Conn;
use crate::change::ids::base_stream_name;
use crate::protocol::messages::{TableAck, TableReq};
use crate::session::reply::{to_value, Reply};
use crate::session::Session;
use crate::store::session_port::TableStore;

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
pub async fn leave_table<C: Conn>(session: &mut C, table: &str) {
    session.hub_leave(table).await;
    session.forget_coalesced(table);
    // Its bases: a base none of the connection's tables needs is left.
    let mut emptied = Vec::new();
    for (base, sub) in session.bases_mut().iter_mut() {
        if sub.tables.remove(table) && sub.tables.is_empty() {
            emptied.push(base.clone());
        }
    }
    for base in emptied {
        session.bases_mut().remove(&base);
        session.hub_leave(&base_stream_name(&base)).await;
        release_place(session);
    }
    let Some(user) = session.user().map(|i| i.user_id.clone()) else {
        return;
    };
    session.place_removed(&user);
    match session
        .store()
        .leave_presence(table, session.conn_id(), &user)
        .await
    {
        Ok(0) => session.expire_later(table, user),
        Ok(_) => {}
        Err(e) => tracing::warn!(table, error = %e, "could not leave presence; the sweeper will"),
    }
}
