//! Table subscriptions of a connection: subscribe, unsubscribe, and
//! `recover_connection`, which subscribes from a client's last seen event.
//!
//! Recovery is gap-free and duplicate-free: the missed events are read from
//! the stream page by page and queued, then the connection is registered in
//! the hub only if the hub has not fanned out anything past the last event
//! read (else the next page is read first). Live events queued afterwards
//! are all newer, so the client sees the stream after its `lastEventId`
//! exactly once, in order.

use std::time::Duration;

use serde_json::{json, Value};

use super::dispatch::{forbidden, identity, send, to_value, Reply};
use super::Session;
use crate::hub::Join;
use crate::protocol::codec::encode_frame;
use crate::protocol::event::{bounded_groups, list_frame, ChangeEvent};
use crate::protocol::messages::{
    parse, RecoverReq, SubscribeAck, SubscribeReq, TableAck, TableReq,
};
use crate::protocol::RequestError;
use crate::store::groups::ZERO_ID;
use crate::store::history::{self, Position};
use crate::store::presence;
use crate::store::StoreError;

/// Events read from the stream per page of a recovery (sent as bounded
/// `missed_events` frames).
pub const MISSED_PAGE: usize = 200;

pub async fn subscribe(session: &mut Session, data: Value) -> Reply {
    let req: SubscribeReq = parse("subscribe_to_table", data)?;
    req.validate()?;
    let (cursor, color) = enter(session, &req, None).await?;
    to_value(&SubscribeAck {
        table_id: &req.table_id,
        last_event_id: &cursor,
        color: &color,
    })
}

/// Registers the connection on a table, joins the user's presence and
/// queues `table_users` (and, for a plain subscribe, `recent_changes`) to
/// follow the reply. `registered` is the cursor when recovery already
/// registered the connection in the hub. Returns (cursor, color).
async fn enter(
    session: &mut Session,
    req: &SubscribeReq,
    registered: Option<String>,
) -> Result<(String, String), RequestError> {
    let user = identity(session)?;
    if !user.grants.can_read(&req.table_id) {
        return Err(forbidden("read", &req.table_id));
    }
    let presence = json!({
        "userId": user.user_id, "userName": user.user_name, "avatarUrl": user.avatar_url,
        "tableId": req.table_id, "viewId": req.view_id,
    });
    let app = session.app.clone();
    let table = req.table_id.as_str();
    let recovering = registered.is_some();
    let cursor = match registered {
        Some(c) => c,
        None => app.hub.subscribe(table, session.outbox.clone()).await?,
    };
    let recent_count = if recovering {
        0
    } else {
        app.config.recent_changes
    };
    let joined = async {
        let recent = history::recent_events(&app.store, table, &cursor, recent_count).await?;
        let joined = presence::join(&app.store, table, session.conn_id(), &presence).await?;
        Ok::<_, StoreError>((recent, joined))
    }
    .await;
    let (recent, joined) = match joined {
        Ok(j) => j,
        Err(e) => {
            if !session.tables.contains(table) {
                app.hub.unsubscribe(table, session.conn_id()).await;
            }
            return Err(e.into());
        }
    };
    session.tables.insert(req.table_id.clone());
    let enc = session.encoding();
    crate::metrics::message_out("table_users");
    session
        .after_reply
        .push(encode_frame(enc, "table_users", &joined.users, None));
    if !recovering {
        let events = decode(&recent, table);
        crate::metrics::message_out("recent_changes");
        session
            .after_reply
            .push(list_frame("recent_changes", events.iter(), enc));
    }
    Ok((cursor, joined.color))
}

fn decode(entries: &[crate::store::tailer::Entry], table: &str) -> Vec<ChangeEvent> {
    entries
        .iter()
        .filter_map(
            |(id, fields)| match ChangeEvent::from_entry(id, fields, Some(table)) {
                Ok(e) => Some(e),
                Err(err) => {
                    tracing::warn!(table, id, error = %err, "skipping a malformed stream entry");
                    None
                }
            },
        )
        .collect()
}

/// `recover_connection`: replays what the client missed, then subscribes.
pub async fn recover(session: &mut Session, data: Value) -> Reply {
    let req: RecoverReq = parse("recover_connection", data)?;
    req.validate()?;
    let table = req.table_id.clone();
    if !identity(session)?.grants.can_read(&table) {
        return Err(forbidden("read", &table));
    }
    if session.tables.contains(&table) {
        return Err(RequestError::bad_request(
            "already subscribed to this table; after a reconnect send recover_connection instead of subscribe_to_table",
        ));
    }
    let app = session.app.clone();
    let Some(last_seen) = req.last_event_id.clone() else {
        // No position: a plain subscribe, reported as a recovery of nothing.
        let (cursor, _) = enter(session, &req.as_subscribe(), None).await?;
        return recovered(session, &table, 0, &cursor);
    };
    let position = history::position(&app.store, &table, &last_seen).await?;
    let reason = match position {
        Position::Replayable => None,
        Position::Trimmed => Some("history_trimmed"),
        Position::Reset => Some("stream_reset"),
    };
    if let Some(reason) = reason {
        tracing::info!(table, last_seen, reason, "recovery needs a resync");
        send(
            session,
            "resync_required",
            &json!({"tableId": table, "reason": reason}),
            None,
        );
        return Ok(json!({"tableId": table, "resyncRequired": reason}));
    }
    let mut after = last_seen;
    let mut missed = 0usize;
    let result = async {
        loop {
            let page = history::range_after(&app.store, &table, &after, MISSED_PAGE).await?;
            if let Some((last, _)) = page.last() {
                after = last.clone();
                let events = decode(&page, &table);
                missed += events.len();
                for group in bounded_groups(&events) {
                    crate::metrics::message_out("missed_events");
                    let frame = list_frame("missed_events", group.iter(), session.encoding());
                    if !session.outbox.push_wait(frame).await {
                        return Err(RequestError::new(
                            crate::protocol::ErrorCode::Internal,
                            "connection closed during recovery",
                        ));
                    }
                }
                if page.len() == MISSED_PAGE {
                    continue;
                }
            }
            match app
                .hub
                .join(&table, session.outbox.clone(), Some(&after))
                .await?
            {
                Join::Joined(_) => return Ok(()),
                Join::Behind(_) => continue,
            }
        }
    }
    .await;
    if let Err(e) = result {
        app.hub.unsubscribe(&table, session.conn_id()).await;
        return Err(e);
    }
    enter(session, &req.as_subscribe(), Some(after.clone())).await?;
    recovered(session, &table, missed, &after)
}

fn recovered(session: &mut Session, table: &str, missed: usize, last: &str) -> Reply {
    let last = if last.is_empty() { ZERO_ID } else { last };
    crate::metrics::message_out("connection_recovered");
    let body = json!({"tableId": table, "timestamp": crate::now_ms(),
        "missedEventsCount": missed, "lastEventId": last});
    session.after_reply.push(encode_frame(
        session.encoding(),
        "connection_recovered",
        &body,
        None,
    ));
    Ok(json!({"missedEventsCount": missed, "lastEventId": last}))
}

pub async fn unsubscribe(session: &mut Session, data: Value) -> Reply {
    let req: TableReq = parse("unsubscribe_from_table", data)?;
    req.validate()?;
    if session.tables.remove(&req.table_id) {
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
    let Some(user) = session.identity.as_ref().map(|i| i.user_id.clone()) else {
        return;
    };
    match presence::leave(&app.store, table, session.conn_id(), &user).await {
        Ok(0) => {
            let grace = Duration::from_millis(app.config.presence_grace_ms);
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
