//! Table subscriptions of a connection. `subscribe_to_table` (with or
//! without `lastEventId`) and `recover_connection` (subscribed or not) all
//! go through one `join`, which keeps the order of docs/protocol.md 3.1:
//!
//! 1. The connection is registered in the hub *pending* at the table's
//!    cursor, the subscription's start `S`: live events after `S` are held
//!    for it from then on.
//! 2. Presence is joined and the history is sized, bounded by `S`: the
//!    latest events at or before it (`recent_changes`, at most
//!    `RTS_RECENT_CHANGES` and `RTS_MAX_PAGE_BYTES`), or exactly the events
//!    in `(lastEventId, S]` (`missed_events`, counted in Redis first), or
//!    `resync_required` when those are gone or too many.
//! 3. The handler answers with the ack and the steps that follow it
//!    ([`Then`]): `table_users`, the history (a replay is read page by page,
//!    each page only once the connection has room for it), then
//!    `connection_recovered`; only then is the subscriber activated and the
//!    held events follow. So no event comes twice, none is missing, none
//!    arrives before the ack, and a reader that does not drain costs at
//!    most its send queue's bytes and one page.
//!
//! On a table already subscribed, a recovery replays `(lastEventId, S]` of
//! the existing subscription; later events arrive live as they did.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::reply::{forbidden, identity, read_mask, to_value, Answer, Reply, Then};
use super::{base_access, Session};
use crate::change::ids::{base_of_stream, base_stream_name};
use crate::grant::{masking, ReadMask};
use crate::protocol::event::{bounded_groups, ChangeEvent};
use crate::protocol::messages::{parse, RecoverReq, SubscribeReq, TableAck, TableReq};
use crate::protocol::{Encoding, Framing, ServerEvent};
use crate::protocol::{RequestError, StreamId};
use crate::store::history::{self, Position};
use crate::store::presence;
use crate::store::tailer::decode_events;
use crate::store::StoreError;

/// Most events read from the stream per page of a recovery.
const MISSED_PAGE: usize = 500;
/// Most bytes of entry data read per page of a recovery (one page is what
/// the sidecar holds for a replay besides the connection's send queue).
const MISSED_PAGE_BYTES: usize = 256 * 1024;
/// Most events a recovery replays; past that the client reloads the table
/// (`resync_required`, reason `history_too_long`): loading the state is
/// cheaper than replaying a day of edits.
pub const MAX_MISSED_EVENTS: usize = 10_000;
/// Most bytes of entry data (field names and values as stored) a recovery
/// replays, likewise.
pub const MAX_MISSED_BYTES: usize = 16 * 1024 * 1024;

/// Which history a join sends.
enum History {
    /// The latest events at or before the start (`recent_changes`).
    Recent,
    /// Every event after the client's last seen id (`missed_events`).
    Since(StreamId),
}

/// What a join answers with.
struct Joined {
    start: StreamId,
    color: String,
    missed: usize,
    resync: Option<&'static str>,
    /// The base stream's start, when the subscribe joined its `baseId`.
    base_start: Option<StreamId>,
    /// Whether the named base's events reach the connection (`None`: no
    /// base named).
    base_events: Option<bool>,
    /// What follows the ack.
    then: Vec<Then>,
}

impl Joined {
    /// The answer of a join: `ack` with what every join's ack says
    /// (`resyncRequired`, `baseLastEventId`), then the steps that follow.
    fn answer(self, mut ack: Value) -> Answer {
        if let Some(reason) = self.resync {
            ack["resyncRequired"] = json!(reason);
        }
        if let Some(base_start) = self.base_start {
            ack["baseLastEventId"] = json!(base_start);
        }
        if let Some(base_events) = self.base_events {
            ack["baseEvents"] = json!(base_events);
        }
        Answer {
            result: ack,
            then: self.then,
            supersedable: None,
        }
    }
}

/// The history a join sends after its ack.
struct HistoryPlan {
    /// `recent_changes` frames, read already (bounded in bytes).
    frames: Vec<Bytes>,
    /// Missed events to replay: `(after, start]`, and how many.
    replay: Option<(StreamId, usize)>,
    resync: Option<&'static str>,
}

pub async fn subscribe(session: &mut Session, data: Value) -> Reply {
    let req: SubscribeReq = parse("subscribe_to_table", data)?;
    req.validate()?;
    let history = match &req.last_event_id {
        Some(l) => History::Since(StreamId::parse_or_zero(l)),
        None => History::Recent,
    };
    let recovering = matches!(history, History::Since(_));
    let joined = join(session, &req, history, recovering).await?;
    let mut ack =
        json!({"tableId": req.table_id, "lastEventId": joined.start, "color": joined.color});
    // The effective grant, so a client knows which fields it may read and
    // write (docs/protocol.md 2.1): `access`, and `fields` when they differ.
    if let Some(grant) = identity(session)?.grants.table(&req.table_id) {
        if let Value::Object(described) = grant.describe() {
            for (k, v) in described {
                ack[k] = v;
            }
        }
    }
    if recovering {
        ack["missedEventsCount"] = json!(joined.missed);
    }
    let table = req.table_id.clone();
    let mut answer = joined.answer(ack);
    let fresh = answer
        .then
        .iter()
        .any(|t| matches!(t, Then::Activate(t) if *t == table));
    if fresh && !recovering {
        answer.supersedable = Some(table);
    }
    Ok(answer)
}

/// `recover_connection`: replays what the client missed, then (if it was
/// not subscribed) subscribes.
pub async fn recover(session: &mut Session, data: Value) -> Reply {
    let req: RecoverReq = parse("recover_connection", data)?;
    req.validate()?;
    let history = match &req.last_event_id {
        Some(l) => History::Since(StreamId::parse_or_zero(l)),
        // No position: a plain subscribe, reported as a recovery of nothing.
        None => History::Recent,
    };
    let joined = join(session, &req.as_subscribe(), history, true).await?;
    let ack = json!({"tableId": req.table_id, "missedEventsCount": joined.missed,
        "lastEventId": joined.start});
    Ok(joined.answer(ack))
}

/// The one entry path (see the module docs). `recovery` adds
/// `connection_recovered` after the history.
#[allow(clippy::too_many_lines)] // split by the session refactor
async fn join(
    session: &mut Session,
    req: &SubscribeReq,
    history: History,
    recovery: bool,
) -> Result<Joined, RequestError> {
    let table = req.table_id.as_str();
    let existing = admit(session, table)?;
    let user = identity(session)?;
    let user_id = user.user_id.clone();
    let presence_doc = json!({
        "userId": user.user_id, "userName": user.user_name, "avatarUrl": user.avatar_url,
        "tableId": table, "viewId": req.view_id,
    });
    let app = session.app.clone();
    let enc = session.framing();
    let mask = read_mask(session, table);
    let start = match &existing {
        Some(s) => *s,
        None => match app
            .hub
            .join(table, session.outbox.clone(), mask.clone())
            .await
        {
            Ok(start) => start,
            Err(e) => {
                app.subscription_removed(&user_id);
                return Err(e.into());
            }
        },
    };
    let read = async {
        let joined = presence::join(&app.store, table, session.conn_id(), &presence_doc).await?;
        let plan = plan_history(session, table, &history, start).await?;
        Ok::<_, StoreError>((joined, plan))
    }
    .await;
    let (joined, plan) = match read {
        Ok(r) => r,
        Err(e) => {
            if existing.is_none() {
                app.hub.unsubscribe(table, session.conn_id()).await;
                app.subscription_removed(&user_id);
            }
            return Err(e.into());
        }
    };
    session.tables.insert(table.to_owned(), start);
    let missed = plan.replay.as_ref().map(|(_, n)| *n).unwrap_or(0);
    let resync = plan.resync;
    let mut users = joined.users;
    if let Some(mask) = &mask {
        users
            .iter_mut()
            .for_each(|u| masking::presence_user(u, mask));
    }
    let mut then = after_ack(enc, table, start, users, plan, recovery);
    if existing.is_none() {
        then.push(Then::Activate(table.to_owned()));
    }
    let base = match join_base(session, req, table).await {
        Ok(b) => b,
        Err(e) => {
            if existing.is_none() {
                session.tables.remove(table);
                leave_table(session, table).await;
            }
            return Err(e);
        }
    };
    let (base_start, base_events) = match base {
        BaseJoin::NotNamed => (None, None),
        BaseJoin::Refused => (None, Some(false)),
        BaseJoin::Joined(start, base_then) => {
            then.extend(base_then);
            (Some(start), Some(true))
        }
    };
    Ok(Joined {
        start,
        color: joined.color,
        missed,
        resync,
        base_start,
        base_events,
        then,
    })
}

/// Checks a join may happen: read access, and for a table new to the
/// connection its caps (per connection, and per user, which counts it).
/// Returns the start of the connection's subscription to it, if any.
fn admit(session: &Session, table: &str) -> Result<Option<StreamId>, RequestError> {
    let user = identity(session)?;
    if !user.grants.can_read(table) {
        return Err(forbidden("read", table));
    }
    let existing = session.tables.get(table).cloned();
    if existing.is_some() {
        return Ok(existing);
    }
    take_place(session, &user.user_id)?;
    Ok(None)
}

/// The steps after a join's ack, in order (docs/protocol.md 3.1):
/// `table_users`, the history (or `resync_required`), then for a recovery
/// `connection_recovered` (after a replay read at the reader's pace).
fn after_ack(
    enc: &dyn Framing,
    table: &str,
    start: StreamId,
    users: Vec<Value>,
    plan: HistoryPlan,
    recovery: bool,
) -> Vec<Then> {
    crate::metrics::message_out(ServerEvent::TableUsers);
    let users = Value::Array(users);
    let mut then = vec![Then::Frame(enc.frame(
        ServerEvent::TableUsers,
        &users,
        None,
    ))];
    then.extend(plan.frames.into_iter().map(Then::Frame));
    let missed = plan.replay.as_ref().map(|(_, n)| *n).unwrap_or(0);
    if let Some(reason) = plan.resync {
        tracing::info!(table, reason, "recovery needs a resync");
        then.push(Then::Frame(resync_frame(enc, table, reason)));
    } else if recovery {
        crate::metrics::message_out(ServerEvent::ConnectionRecovered);
        let body = json!({"tableId": table, "timestamp": crate::now_ms(),
            "missedEventsCount": missed, "lastEventId": start});
        let done = enc.frame(ServerEvent::ConnectionRecovered, &body, None);
        match plan.replay {
            Some((after, _)) => then.push(Then::Replay {
                table: table.to_owned(),
                after,
                until: start,
                done: Some(done),
            }),
            None => then.push(Then::Frame(done)),
        }
    }
    then
}

/// A base whose stream the connection reads, for the tables of it that
/// the connection subscribed to (docs/protocol.md 3.2).
pub struct BaseSubscription {
    /// The base stream's position when the connection joined it.
    pub start: StreamId,
    pub tables: HashSet<String>,
    /// A `baseLastEventId` was replayed already: the connection has every
    /// base event after it, so a later one (another table's join of the
    /// same base) replays nothing again.
    pub recovered: bool,
}

/// What a subscribe's `baseId` came to.
enum BaseJoin {
    /// The subscribe named no base.
    NotNamed,
    /// The connection may not read the base it named: the table is
    /// subscribed without base events (`baseEvents: false`).
    Refused,
    /// The base stream's start and the steps that follow the ack.
    Joined(StreamId, Vec<Then>),
}

/// Joins the base of a subscribe (its `baseId`), once per connection: the
/// base's events then reach the connection once, however many of its
/// tables it subscribes to. Only a base the token grants, or the one the
/// server holds for the table, is joined (docs/protocol.md 3.2); a base
/// new to the connection counts against the subscription caps. With
/// `baseLastEventId` the base events missed since are replayed (or
/// `resync_required {baseId}`).
async fn join_base(
    session: &mut Session,
    req: &SubscribeReq,
    table: &str,
) -> Result<BaseJoin, RequestError> {
    let Some(base) = req.base_id.as_deref() else {
        return Ok(BaseJoin::NotNamed);
    };
    if !base_access::may_read(session, table, base).await? {
        tracing::info!(table, base, "a subscribe named a base it may not read");
        return Ok(BaseJoin::Refused);
    }
    let name = base_stream_name(base);
    let enc = session.framing();
    let app = session.app.clone();
    let (start, fresh) = match session.bases.get_mut(base) {
        Some(sub) => {
            sub.tables.insert(table.to_owned());
            (sub.start, false)
        }
        None => {
            admit_base(session)?;
            let start = match app.hub.join(&name, session.outbox.clone(), None).await {
                Ok(start) => start,
                Err(e) => {
                    release_base_count(session);
                    return Err(e.into());
                }
            };
            let sub = BaseSubscription {
                start,
                tables: HashSet::from([table.to_owned()]),
                recovered: false,
            };
            session.bases.insert(base.to_owned(), sub);
            (start, true)
        }
    };
    let mut then = Vec::new();
    let recovered = session.bases.get(base).is_some_and(|b| b.recovered);
    if let Some(last) = req.base_last_event_id.as_ref().filter(|_| !recovered) {
        if let Some(sub) = session.bases.get_mut(base) {
            sub.recovered = true;
        }
        let history = History::Since(StreamId::parse_or_zero(last));
        let plan = match plan_history(session, &name, &history, start).await {
            Ok(p) => p,
            Err(e) => {
                if fresh {
                    session.bases.remove(base);
                    app.hub.unsubscribe(&name, session.conn_id()).await;
                    release_base_count(session);
                }
                return Err(e.into());
            }
        };
        if let Some(reason) = plan.resync {
            tracing::info!(base, reason, "base recovery needs a resync");
            then.push(Then::Frame(resync_frame(enc, &name, reason)));
        } else if let Some((after, _)) = plan.replay {
            then.push(Then::Replay {
                table: name.clone(),
                after,
                until: start,
                done: None,
            });
        }
    }
    if fresh {
        then.push(Then::Activate(name));
    }
    Ok(BaseJoin::Joined(start, then))
}

/// A base new to the connection takes a place under the subscription caps,
/// as a table does (per connection, and per user, which counts it).
fn admit_base(session: &Session) -> Result<(), RequestError> {
    let user = identity(session)?;
    take_place(session, &user.user_id)
}

/// One more table or base under the caps: the connection's (its tables
/// and bases together) and the user's on this sidecar, which counts it.
fn take_place(session: &Session, user: &str) -> Result<(), RequestError> {
    let max = session.app.config.max_subscriptions;
    if session.tables.len() + session.bases.len() >= max {
        return Err(RequestError::bad_request(format!(
            "at most {max} tables and bases per connection (RTS_MAX_SUBSCRIPTIONS)"
        )));
    }
    if !session.app.subscription_added(user) {
        let max = session.app.config.max_subscriptions_per_user;
        return Err(RequestError::bad_request(format!(
            "at most {max} tables and bases per user on this sidecar (RTS_MAX_SUBSCRIPTIONS_PER_USER)"
        )));
    }
    Ok(())
}

/// Gives back a base's place under the per-user cap.
fn release_base_count(session: &Session) {
    if let Some(user) = session.identity.as_ref() {
        session.app.subscription_removed(&user.user_id);
    }
}

/// `resync_required` for the stream `name`: `{tableId}` of a table, or
/// `{baseId}` of a base's stream.
fn resync_frame(enc: &dyn Framing, name: &str, reason: &str) -> Bytes {
    crate::metrics::message_out(ServerEvent::ResyncRequired);
    let body = match base_of_stream(name) {
        Some(base) => json!({"baseId": base, "reason": reason}),
        None => json!({"tableId": name, "reason": reason}),
    };
    enc.frame(ServerEvent::ResyncRequired, &body, None)
}

/// What history a join ending at `start` sends: the recent events (read
/// now, bounded in count and bytes), or the range of missed events to
/// replay (sized in Redis now, read later at the reader's pace), or the
/// reason the client must reload instead.
async fn plan_history(
    session: &Session,
    table: &str,
    history: &History,
    start: StreamId,
) -> Result<HistoryPlan, StoreError> {
    let enc = session.framing();
    let app = &session.app;
    let last_seen = match history {
        History::Recent => {
            let mask = read_mask(session, table);
            let events = recent_events(session, table, start, mask.as_deref()).await?;
            return Ok(HistoryPlan {
                frames: frames(ServerEvent::RecentChanges, &events, enc),
                replay: None,
                resync: None,
            });
        }
        History::Since(l) => *l,
    };
    let nothing = |resync| HistoryPlan {
        frames: Vec::new(),
        replay: None,
        resync,
    };
    let reason = match history::position(&app.store, table, last_seen).await? {
        Position::Replayable => None,
        Position::Trimmed => Some("history_trimmed"),
        Position::Reset => Some("stream_reset"),
    };
    if reason.is_some() {
        return Ok(nothing(reason));
    }
    // Already past the start (it received live events of this
    // subscription): nothing to replay.
    if last_seen >= start {
        return Ok(nothing(None));
    }
    let (n, bytes) = history::size(
        &app.store,
        table,
        last_seen,
        start,
        MAX_MISSED_EVENTS,
        MAX_MISSED_BYTES,
    )
    .await?;
    if n > MAX_MISSED_EVENTS || bytes > MAX_MISSED_BYTES {
        return Ok(nothing(Some("history_too_long")));
    }
    Ok(HistoryPlan {
        frames: Vec::new(),
        replay: Some((last_seen, n)),
        resync: None,
    })
}

/// The latest events at or before `start` for `recent_changes`: at most
/// `RTS_RECENT_CHANGES` entries and `RTS_MAX_PAGE_BYTES`, the newest
/// always. A reader of every field gets them from one `rtsync_history
/// recent` call (bounded by the entries' bytes). For a reader of `mask` the
/// bound counts the masked events it receives, so how many it gets never
/// depends on fields hidden from it: entries are read newest first, a call
/// at a time (each bounded by the entries' bytes, as above), until the
/// masked events fill the bound: one call unless masking shrinks them.
async fn recent_events(
    session: &Session,
    table: &str,
    start: StreamId,
    mask: Option<&ReadMask>,
) -> Result<Vec<ChangeEvent>, StoreError> {
    let app = &session.app;
    let (count, max_bytes) = (app.config.recent_changes, app.config.max_page_bytes);
    let Some(mask) = mask else {
        let recent = history::recent_events(&app.store, table, start, count, max_bytes).await?;
        return Ok(decode_events(&recent, table));
    };
    let mut newest_first = Vec::new();
    let (mut read, mut used) = (0, 0);
    let mut until = Some(start);
    'read: while let Some(upto) = until.filter(|_| read < count) {
        let chunk =
            history::recent_events(&app.store, table, upto, count - read, max_bytes).await?;
        let Some((oldest, _)) = chunk.first() else {
            break;
        };
        until = before(*oldest);
        read += chunk.len();
        for event in decode_events(&chunk, table).into_iter().rev() {
            let Some(event) = masking::owned_event(event, Some(mask)) else {
                continue;
            };
            // The size the frames are grouped by (encoded once, kept).
            let size = event.encoded(Encoding::MsgPack).len();
            if !newest_first.is_empty() && used + size > max_bytes {
                break 'read;
            }
            used += size;
            newest_first.push(event);
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// The stream id just before `id`, if any.
fn before(id: StreamId) -> Option<StreamId> {
    match (id.ms, id.seq) {
        (0, 0) => None,
        (ms, 0) => Some(StreamId {
            ms: ms - 1,
            seq: u64::MAX,
        }),
        (ms, seq) => Some(StreamId { ms, seq: seq - 1 }),
    }
}

/// Streams the missed events `(after, until]` of `table` as bounded
/// `missed_events` frames, one page at a time: a page is read only once
/// the previous one is queued, and each frame is queued only when the
/// connection has room (so the sidecar holds at most the send queue's
/// bytes and one page). Frames are cut by the masked events alone, never
/// where a page (bounded by the stored entries' bytes) ends: the last frame
/// of a page is held back to take the next page's first events, so where
/// a frame ends never depends on fields hidden from the reader. Then
/// `done`. A page that cannot be read ends the replay with
/// `resync_required` instead. False when the connection closed.
pub async fn replay(
    session: &Session,
    table: &str,
    after: StreamId,
    until: StreamId,
    done: Option<Bytes>,
) -> bool {
    let enc = session.framing();
    let mask: Option<Arc<ReadMask>> = read_mask(session, table);
    let mut after = after;
    // Masked events not yet framed: at most one frame's worth.
    let mut held: Vec<ChangeEvent> = Vec::new();
    loop {
        let page = match history::range(
            &session.app.store,
            table,
            after,
            until,
            MISSED_PAGE,
            MISSED_PAGE_BYTES,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(table, error = %e, "a recovery page could not be read; the client must resync");
                return session
                    .outbox
                    .push_paced(resync_frame(enc, table, "unavailable"))
                    .await;
            }
        };
        let Some((last, _)) = page.last() else { break };
        after = *last;
        // Only the encoded frames (and the held events) are kept while the
        // connection drains: the page is dropped first.
        let page_frames = {
            held.extend(masking::owned_events(
                decode_events(&page, table),
                mask.as_deref(),
            ));
            drop(page);
            // Grouping is greedy, so every group but the last is final.
            let last = bounded_groups(&held).last().map_or(0, |g| g.len());
            let ready = held.len() - last;
            let out = frames(ServerEvent::MissedEvents, &held[..ready], enc);
            held.drain(..ready);
            out
        };
        for frame in page_frames {
            if !session.outbox.push_paced(frame).await {
                return false;
            }
        }
        if after == until {
            break;
        }
    }
    for frame in frames(ServerEvent::MissedEvents, &held, enc) {
        if !session.outbox.push_paced(frame).await {
            return false;
        }
    }
    match done {
        Some(done) => session.outbox.push_paced(done).await,
        None => true,
    }
}

/// Bounded list frames (at most 256 events and 256 KiB each) of `name`.
fn frames(name: ServerEvent, events: &[ChangeEvent], enc: &dyn Framing) -> Vec<Bytes> {
    bounded_groups(events)
        .into_iter()
        .map(|group| {
            crate::metrics::message_out(name);
            enc.events_frame(name, &group.iter().collect::<Vec<_>>())
        })
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
        release_base_count(session);
    }
    let Some(user) = session.identity.as_ref().map(|i| i.user_id.clone()) else {
        return;
    };
    app.subscription_removed(&user);
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
