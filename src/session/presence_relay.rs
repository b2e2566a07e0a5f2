//! Presence traffic of a subscribed table: `heartbeat` (refreshes the
//! connection's presence, answered `heartbeat_ack`), and `cursor_position`,
//! `selection`, `editing` and `viewport` (v1.3), coalesced per table and
//! kind (20 per second per connection) and gated per user over all of
//! their connections before they are relayed to the table's other
//! subscribers. A relayed editing start is checked again once
//! `RTS_EDITING_TTL_MS` has passed: not renewed, it ends (a stop goes out).
//! A `viewport` also sets this connection's relay filter in the hub, used
//! when it subscribed with `relay: "viewport"`.
//!
//! Data flow: `route` → a handler → [`offer`] (the connection's
//! [`crate::presence::Coalescer`]) → [`gated_relay`] (the app's relay
//! gate) → `store::presence::touch`; updates deferred meanwhile go out
//! from [`flush_due`] when the read loop's timer fires.

use serde_json::{json, Value};

use super::reply::{identity, send, to_value, Reply};
use super::Session;
use crate::grant::{Access, FieldAccess};
use crate::protocol::messages::{
    CursorReq, EditingReq, EditingState, RelayScope, SelectionReq, TableReq, Timestamp, ViewportReq,
};
use crate::protocol::{ErrorCode, RequestError, ServerEvent};
use crate::store::presence::{self, Touch};

/// `heartbeat`: keeps the connection's presence on the table alive (it
/// is swept when stale), answered `heartbeat_ack` and the ack.
pub async fn heartbeat(session: &mut Session, req: TableReq) -> Reply {
    require_subscription(session, &req.table_id)?;
    relay(session, &req.table_id, Touch::Heartbeat, Value::Null).await?;
    let ts = Timestamp {
        timestamp: crate::now_ms(),
    };
    send(session, ServerEvent::HeartbeatAck, &ts, None);
    to_value(&ts)
}

/// `cursor_position`: relayed to the table's other subscribers, at most
/// one per slot (the latest wins).
pub async fn cursor_position(session: &mut Session, req: CursorReq) -> Reply {
    require_subscription(session, &req.table_id)?;
    let value =
        serde_json::to_value(&req.cursor).map_err(|e| RequestError::bad_request(e.to_string()))?;
    offer(session, &req.table_id, Touch::Cursor, value).await?;
    Ok(json!({}).into())
}

/// `selection`: relayed like a cursor.
pub async fn selection(session: &mut Session, req: SelectionReq) -> Reply {
    require_subscription(session, &req.table_id)?;
    let value = serde_json::to_value(&req.selection)
        .map_err(|e| RequestError::bad_request(e.to_string()))?;
    offer(session, &req.table_id, Touch::Selection, value).await?;
    Ok(json!({}).into())
}

/// `editing` (v1.3): relayed as `user_editing` like a cursor (one slot,
/// the latest wins), ending by itself after `RTS_EDITING_TTL_MS` unless a
/// later start renews it.
pub async fn editing(session: &mut Session, req: EditingReq) -> Reply {
    require_subscription(session, &req.table_id)?;
    if req.state == EditingState::Start {
        require_writable(session, &req.table_id, &req.field_id)?;
    }
    let ttl_ms = session.app.config.editing_ttl.as_millis() as u64;
    let value = json!({"recordId": req.record_id, "fieldId": req.field_id,
        "state": req.state, "ttlMs": ttl_ms});
    offer(session, &req.table_id, Touch::Editing, value).await?;
    Ok(json!({}).into())
}

/// `viewport` (v1.3): kept in presence (`table_users`), relayed as
/// `user_viewport`, and this connection's relay filter from now on.
pub async fn viewport(session: &mut Session, req: ViewportReq) -> Reply {
    require_subscription(session, &req.table_id)?;
    let conn = session.conn_id().to_owned();
    session
        .app
        .hub
        .set_viewport(&req.table_id, &conn, req.filter());
    let value = serde_json::to_value(&req).map_err(|e| RequestError::bad_request(e.to_string()))?;
    offer(session, &req.table_id, Touch::Viewport, value).await?;
    Ok(json!({}).into())
}

/// After a subscribe: with `relay: "viewport"`, the connection's cursor
/// and editing relays follow its viewport.
pub fn relay_scope(session: &Session, table: &str, scope: RelayScope) {
    if scope == RelayScope::Viewport {
        session.app.hub.relay_by_viewport(table, session.conn_id());
    }
}

/// An editing start names a cell the user may write: a reader (or a user
/// the field is hidden from) would otherwise show others an indicator of
/// an edit that cannot happen. A stop is always accepted, so it can end
/// one started before the grant changed.
fn require_writable(session: &Session, table: &str, field: &str) -> Result<(), RequestError> {
    let grant = identity(session)?.grants.table(table);
    if grant
        .is_some_and(|g| g.access == Access::ReadWrite && g.field(field) == FieldAccess::ReadWrite)
    {
        return Ok(());
    }
    tracing::debug!(
        table,
        field,
        "editing start refused: the field is not writable"
    );
    Err(RequestError::new(
        ErrorCode::Forbidden,
        format!("no write access to field {field} of table {table}"),
    ))
}

/// Presence traffic is for a table the connection subscribed to.
fn require_subscription(session: &Session, table: &str) -> Result<(), RequestError> {
    if session.tables.contains_key(table) {
        Ok(())
    } else {
        Err(RequestError::new(
            ErrorCode::NotSubscribed,
            format!("not subscribed to table {table}"),
        ))
    }
}

/// Relays a cursor or selection now, or keeps it for the next slot: the
/// connection's own (20 per second per table) and the user's, over all of
/// their connections on this sidecar.
async fn offer(
    session: &mut Session,
    table: &str,
    kind: Touch,
    value: Value,
) -> Result<(), RequestError> {
    let now = tokio::time::Instant::now();
    match session.coalescer.offer(table, kind, value, now) {
        Some(value) => gated_relay(session, table, kind, value, now).await,
        None => Ok(()),
    }
}

/// Relays when the user's slot is free, else defers to the next slot.
async fn gated_relay(
    session: &mut Session,
    table: &str,
    kind: Touch,
    value: Value,
    now: tokio::time::Instant,
) -> Result<(), RequestError> {
    let user = identity(session)?.user_id.clone();
    if session.app.relay_gate.allow(&user, table, kind, now) {
        relay(session, table, kind, value).await
    } else {
        crate::metrics::relay_deferred();
        session.coalescer.defer(table, kind, value, now);
        Ok(())
    }
}

/// Relays coalesced updates whose slot has come. A failure answers no
/// request: it is logged here (the storage failure at its level).
pub async fn flush_due(session: &mut Session) {
    let now = tokio::time::Instant::now();
    for (table, kind, value) in session.coalescer.take_due(now) {
        if session.tables.contains_key(&table) {
            if let Err(e) = gated_relay(session, &table, kind, value, now).await {
                e.trace();
                tracing::debug!(table, error = %e.message, "could not relay a coalesced update");
            }
        }
    }
}

/// Refreshes presence (and relays a cursor/selection). A presence removed
/// meanwhile (stale, swept) is joined again.
async fn relay(
    session: &mut Session,
    table: &str,
    kind: Touch,
    value: Value,
) -> Result<(), RequestError> {
    let app = session.app.clone();
    let user = identity(session)?.user_id.clone();
    let found = presence::touch(&app.store, table, session.conn_id(), &user, kind, &value).await?;
    if !found {
        let ident = identity(session)?;
        let again = json!({"userId": ident.user_id, "userName": ident.user_name,
            "avatarUrl": ident.avatar_url, "tableId": table});
        presence::join(&app.store, table, session.conn_id(), &again).await?;
        presence::touch(&app.store, table, session.conn_id(), &user, kind, &value).await?;
    }
    if kind == Touch::Editing && value["state"] == "start" {
        expire_editing_later(session, table, user);
    }
    Ok(())
}

/// Checks the user's editing indicator once its TTL has passed; one not
/// renewed meanwhile ends there (`user_editing` "stop"). One check waits
/// per user and table ([`crate::presence::EditingExpiries`]): a renewal
/// moves its deadline instead of starting another. A failure is logged
/// and counted: the sweeper ends it later.
fn expire_editing_later(session: &Session, table: &str, user: String) {
    let app = session.app.clone();
    // A little past the TTL, so the check finds the start due.
    let wait = app.config.editing_ttl + std::time::Duration::from_millis(20);
    let at = tokio::time::Instant::now() + wait;
    if !app.editing_expiries.schedule(&user, table, at) {
        return;
    }
    let table = table.to_owned();
    let tasks = app.tasks.clone();
    tasks.spawn(async move {
        let now = tokio::time::Instant::now;
        while let Some(at) = app.editing_expiries.next_wake(&user, &table, now()) {
            tokio::select! {
                _ = app.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(at) => {}
            }
        }
        match presence::expire_editing(&app.store, &table, &user).await {
            Ok(true) => crate::metrics::editing_expired(),
            Ok(false) => {}
            Err(e) => {
                crate::metrics::editing_expiry_failed();
                tracing::warn!(table, error = %e, "could not end an editing indicator; the sweeper will");
            }
        }
    });
}
