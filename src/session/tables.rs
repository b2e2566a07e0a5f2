//! Table subscriptions of a connection. `subscribe_to_table` (with or
//! without `lastEventId`) and `recover_connection` (subscribed or not) all
//! go through one `join`, which keeps the order of PROTOCOL.md 3.1:
//!
//! 1. The connection is registered in the hub *pending* at the table's
//!    cursor, the subscription's start `S`: live events after `S` are held
//!    for it from then on.
//! 2. Presence is joined and the history is read, bounded by `S`: the
//!    latest events at or before it (`recent_changes`), or exactly the
//!    events in `(lastEventId, S]` (`missed_events`), or `resync_required`
//!    when those are gone or too many.
//! 3. The ack goes out, then `table_users`, then the history frames, then
//!    `connection_recovered`; only then is the subscriber activated and the
//!    held events follow. So no event comes twice, none is missing, and
//!    none arrives before the ack.
//!
//! On a table already subscribed, a recovery replays `(lastEventId, S]` of
//! the existing subscription; later events arrive live as they did.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::dispatch::{forbidden, identity, to_value, Reply};
use super::Session;
use crate::protocol::codec::encode_frame;
use crate::protocol::event::{bounded_groups, list_frame, ChangeEvent};
use crate::protocol::messages::{parse, RecoverReq, SubscribeReq, TableAck, TableReq};
use crate::protocol::{RequestError, StreamId};
use crate::store::history::{self, Position};
use crate::store::presence;
use crate::store::tailer::Entry;
use crate::store::StoreError;

/// Events read from the stream per page of a recovery.
const MISSED_PAGE: usize = 500;
/// Most events a recovery replays; past that the client reloads the table
/// (`resync_required`, reason `history_too_long`): loading the state is
/// cheaper than replaying a day of edits.
pub const MAX_MISSED_EVENTS: usize = 10_000;
/// Most bytes (MessagePack) of events a recovery replays, likewise.
pub const MAX_MISSED_BYTES: usize = 16 * 1024 * 1024;

/// Which history a join sends.
enum History {
    /// The latest events at or before the start (`recent_changes`).
    Recent,
    /// Every event after the client's last seen id (`missed_events`).
    Since(String),
}

/// What a join answers with.
struct Joined {
    start: String,
    color: String,
    missed: usize,
    resync: Option<&'static str>,
}

pub async fn subscribe(session: &mut Session, data: Value) -> Reply {
    let req: SubscribeReq = parse("subscribe_to_table", data)?;
    req.validate()?;
    let history = match &req.last_event_id {
        Some(l) => History::Since(l.clone()),
        None => History::Recent,
    };
    let recovering = matches!(history, History::Since(_));
    let joined = join(session, &req, history, recovering).await?;
    let mut ack =
        json!({"tableId": req.table_id, "lastEventId": joined.start, "color": joined.color});
    if recovering {
        ack["missedEventsCount"] = json!(joined.missed);
    }
    if let Some(reason) = joined.resync {
        ack["resyncRequired"] = json!(reason);
    }
    Ok(ack)
}

/// `recover_connection`: replays what the client missed, then (if it was
/// not subscribed) subscribes.
pub async fn recover(session: &mut Session, data: Value) -> Reply {
    let req: RecoverReq = parse("recover_connection", data)?;
    req.validate()?;
    let history = match &req.last_event_id {
        Some(l) => History::Since(l.clone()),
        // No position: a plain subscribe, reported as a recovery of nothing.
        None => History::Recent,
    };
    let joined = join(session, &req.as_subscribe(), history, true).await?;
    let mut ack = json!({"tableId": req.table_id, "missedEventsCount": joined.missed,
        "lastEventId": joined.start});
    if let Some(reason) = joined.resync {
        ack["resyncRequired"] = json!(reason);
    }
    Ok(ack)
}

/// The one entry path (see the module docs). `recovery` adds
/// `connection_recovered` after the history.
async fn join(
    session: &mut Session,
    req: &SubscribeReq,
    history: History,
    recovery: bool,
) -> Result<Joined, RequestError> {
    let user = identity(session)?;
    let table = req.table_id.as_str();
    if !user.grants.can_read(table) {
        return Err(forbidden("read", table));
    }
    let existing = session.tables.get(table).cloned();
    let max = session.app.config.max_subscriptions;
    if existing.is_none() && session.tables.len() >= max {
        return Err(RequestError::bad_request(format!(
            "at most {max} tables per connection (RTS_MAX_SUBSCRIPTIONS)"
        )));
    }
    let presence_doc = json!({
        "userId": user.user_id, "userName": user.user_name, "avatarUrl": user.avatar_url,
        "tableId": table, "viewId": req.view_id,
    });
    let app = session.app.clone();
    let enc = session.encoding();
    let start = match &existing {
        Some(s) => s.clone(),
        None => app.hub.join(table, session.outbox.clone()).await?,
    };
    let read = async {
        let joined = presence::join(&app.store, table, session.conn_id(), &presence_doc).await?;
        let history = read_history(session, table, &history, &start).await?;
        Ok::<_, StoreError>((joined, history))
    }
    .await;
    let (joined, (frames, missed, resync)) = match read {
        Ok(r) => r,
        Err(e) => {
            if existing.is_none() {
                app.hub.unsubscribe(table, session.conn_id()).await;
            }
            return Err(e.into());
        }
    };
    session.tables.insert(table.to_owned(), start.clone());
    crate::metrics::message_out("table_users");
    session
        .after_reply
        .push(encode_frame(enc, "table_users", &joined.users, None));
    session.after_reply.extend(frames);
    if let Some(reason) = resync {
        tracing::info!(table, reason, "recovery needs a resync");
        crate::metrics::message_out("resync_required");
        let body = json!({"tableId": table, "reason": reason});
        session
            .after_reply
            .push(encode_frame(enc, "resync_required", &body, None));
    } else if recovery {
        crate::metrics::message_out("connection_recovered");
        let body = json!({"tableId": table, "timestamp": crate::now_ms(),
            "missedEventsCount": missed, "lastEventId": start});
        session
            .after_reply
            .push(encode_frame(enc, "connection_recovered", &body, None));
    }
    if existing.is_none() {
        session.activate = Some(table.to_owned());
    }
    Ok(Joined {
        start,
        color: joined.color,
        missed,
        resync,
    })
}

/// The history frames of a join ending at `start`, the number of missed
/// events they replay, or the reason the client must reload instead.
async fn read_history(
    session: &Session,
    table: &str,
    history: &History,
    start: &str,
) -> Result<(Vec<Bytes>, usize, Option<&'static str>), StoreError> {
    let enc = session.encoding();
    let app = &session.app;
    let last_seen = match history {
        History::Recent => {
            let n = app.config.recent_changes;
            let recent = history::recent_events(&app.store, table, start, n).await?;
            let events = decode(&recent, table);
            let frames = frames("recent_changes", &events, enc);
            return Ok((frames, 0, None));
        }
        History::Since(l) => l.as_str(),
    };
    let reason = match history::position(&app.store, table, last_seen).await? {
        Position::Replayable => None,
        Position::Trimmed => Some("history_trimmed"),
        Position::Reset => Some("stream_reset"),
    };
    if reason.is_some() {
        return Ok((Vec::new(), 0, reason));
    }
    // Already past the start (it received live events of this
    // subscription): nothing to replay.
    if StreamId::parse_or_zero(last_seen) >= StreamId::parse_or_zero(start) {
        return Ok((Vec::new(), 0, None));
    }
    let mut after = last_seen.to_owned();
    let mut events = Vec::new();
    let mut bytes = 0;
    loop {
        let page = history::range(&app.store, table, &after, start, MISSED_PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        for e in decode(&page, table) {
            bytes += e.encoded(crate::protocol::Encoding::MsgPack).len();
            events.push(e);
        }
        if events.len() > MAX_MISSED_EVENTS || bytes > MAX_MISSED_BYTES {
            return Ok((Vec::new(), 0, Some("history_too_long")));
        }
        if page.len() < MISSED_PAGE || after == start {
            break;
        }
    }
    let missed = events.len();
    Ok((frames("missed_events", &events, enc), missed, None))
}

/// Bounded list frames (at most 256 events and 256 KiB each) of `name`.
fn frames(
    name: &'static str,
    events: &[ChangeEvent],
    enc: crate::protocol::Encoding,
) -> Vec<Bytes> {
    bounded_groups(events)
        .into_iter()
        .map(|group| {
            crate::metrics::message_out(name);
            list_frame(name, group.iter(), enc)
        })
        .collect()
}

fn decode(entries: &[Entry], table: &str) -> Vec<ChangeEvent> {
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

pub async fn unsubscribe(session: &mut Session, data: Value) -> Reply {
    let req: TableReq = parse("unsubscribe_from_table", data)?;
    req.validate()?;
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
