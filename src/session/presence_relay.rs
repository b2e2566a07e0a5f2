//! Presence traffic of a subscribed table: `heartbeat` (refreshes the
//! connection's presence, answered `heartbeat_ack`), and `cursor_position`
//! and `selection`, coalesced per table (20 per second per connection)
//! and gated per user over all of their connections before they are
//! relayed to the table's other subscribers.
//!
//! Data flow: `route` → a handler → [`offer`] (the connection's
//! [`crate::presence::Coalescer`]) → [`gated_relay`] (the app's relay
//! gate) → `store::presence::touch`; updates deferred meanwhile go out
//! from [`flush_due`] when the read loop's timer fires.

use serde_json::{json, Value};

use super::reply::{identity, send, to_value, Reply};
use super::Session;
use crate::protocol::messages::{CursorReq, SelectionReq, TableReq, Timestamp};
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
    Ok(())
}
