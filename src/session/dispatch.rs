//! Request handling: one function per client event (docs/protocol.md section 3).
//! Each handler returns an [`Answer`] (the `ack` result and the frames that
//! must follow it, in order) or a [`RequestError`]; this module answers with
//! `["ack", result, rid]` or `["error", {code, message}, rid]`, then queues
//! what follows at the reader's pace. Errors are sent even without a `rid`,
//! so no failure is silent.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::attachments::{Attach, Partial};
use super::rate_limit::Verdict;
use super::reply::{
    check_write, identity, read_mask, send, send_value, to_value, Held, Reply, Then, HOLD,
};
use super::{offline, tables, Session};
use crate::auth::{AuthError, Identity};
use crate::change::ChangeRequest;
use crate::grant::{masking, ReadMask};
use crate::outbox::close;
use crate::protocol::error::ErrorBody;
use crate::protocol::framing::{ClientFrame, Control, Inbound};
use crate::protocol::messages::{parse, AuthenticateReq, Authenticated, TableReq, Timestamp};
use crate::protocol::messages::{ClientEvent, CursorReq, SelectionReq};
use crate::protocol::{ErrorCode, RequestError, ServerEvent};
use crate::store::commit::commit;
use crate::store::presence::{self, Touch};

/// A WebSocket ping from the client: it takes a token like any message.
pub fn count_ping(session: &mut Session) {
    match session.limiter.check(tokio::time::Instant::now()) {
        Verdict::Allow => {}
        Verdict::Reject => crate::metrics::rate_limited(),
        Verdict::Close => abuse(session),
    }
}

fn abuse(session: &Session) {
    crate::metrics::rate_limited();
    tracing::warn!("sustained rate-limit abuse: closing 4429");
    session.outbox.close(close::RATE_LIMITED);
}

/// Handles one client message; the reason the connection ends, if it does.
pub async fn handle_frame(session: &mut Session, bytes: &[u8], text: bool) -> Option<&'static str> {
    match session.limiter.check(tokio::time::Instant::now()) {
        Verdict::Allow => {}
        Verdict::Reject => {
            crate::metrics::rate_limited();
            let e = RequestError::new(ErrorCode::RateLimited, "too many messages; slow down");
            let rid = match session.framing().decode(bytes, text) {
                Ok(Inbound::Frame(f) | Inbound::Partial { frame: f, .. }) => f.rid,
                Ok(Inbound::Control(_)) => None,
                Err(b) => b.rid,
            };
            send_error(session, &e, None, rid);
            return None;
        }
        Verdict::Close => {
            abuse(session);
            return None;
        }
    }
    // Engine.IO's own packets (a pong, a ping) may come between a binary
    // event and its attachments: they leave it waiting.
    if session.partial.is_some() && text {
        if let Ok(Inbound::Control(c)) = session.framing().decode(bytes, text) {
            return control(session, c).await;
        }
    }
    if let Some(partial) = session.partial.take() {
        let (waiting, step) = partial.add(bytes, text, session.app.config.max_frame_bytes);
        session.partial = waiting;
        match step {
            Attach::Wait => return None,
            Attach::Complete(frame) => return dispatch(session, frame, bytes.len()).await,
            Attach::Refused(e, rid) => {
                crate::metrics::frame_rejected(crate::metrics::FrameRejected::Attachments);
                send_error(session, &e, None, rid);
            }
            Attach::Dropped => {}
        }
        if !text {
            return None;
        }
        // The text message that came instead is handled on its own.
    }
    if session.held.is_some() {
        release_held_before(session, bytes, text).await;
    }
    let frame = match session.framing().decode(bytes, text) {
        Ok(Inbound::Frame(f)) => f,
        Ok(Inbound::Control(c)) => return control(session, c).await,
        Ok(Inbound::Partial { frame, attachments }) => {
            let rid = frame.rid;
            let due = tokio::time::Instant::now() + attachment_deadline(session);
            let authenticated = session.identity.is_some();
            let (partial, refused) = Partial::new(frame, attachments, authenticated, due);
            session.partial = Some(partial);
            if let Some(e) = refused {
                crate::metrics::frame_rejected(crate::metrics::FrameRejected::Attachments);
                send_error(session, &e, None, rid);
            }
            return None;
        }
        Err(bad) => {
            crate::metrics::message_in(crate::metrics::EventIn::Invalid, bytes.len());
            crate::metrics::frame_rejected(crate::metrics::FrameRejected::Decode);
            send_error(session, &bad.error, None, bad.rid);
            return None;
        }
    };
    dispatch(session, frame, bytes.len()).await
}

/// How long a binary event's attachments may take to arrive: Socket.IO's
/// ping timeout, the time a silent client is given anyway.
fn attachment_deadline(session: &Session) -> std::time::Duration {
    std::time::Duration::from_millis(session.app.config.socketio_ping_timeout_ms)
}

/// A binary event whose attachments did not all arrive in time is refused
/// and its bytes freed.
pub fn expire_partial(session: &mut Session) {
    let Some(partial) = session.partial.take() else {
        return;
    };
    crate::metrics::frame_rejected(crate::metrics::FrameRejected::Attachments);
    tracing::info!("binary attachments did not arrive in time");
    if let Some((e, rid)) = partial.expired() {
        send_error(session, &e, None, rid);
    }
}

/// Steps held after a fresh subscription go out before the next request,
/// unless that request recovers the same table (then `dispatch` lets the
/// recovery supersede them). They are sent at the reader's pace, so the
/// request waits meanwhile as its raw bytes, never decoded: a decoded
/// frame can be many times its size.
async fn release_held_before(session: &mut Session, bytes: &[u8], text: bool) {
    let recovers = match session.framing().decode(bytes, text) {
        Ok(Inbound::Frame(f)) => session.held.as_ref().is_some_and(|h| h.recovered_by(&f)),
        _ => false,
    };
    if !recovers {
        release_held(session).await;
    }
}

/// Dispatches one decoded request (`size`: its message's bytes).
async fn dispatch(session: &mut Session, frame: ClientFrame, size: usize) -> Option<&'static str> {
    let parsed = frame.event.as_ref().ok().copied();
    let event = parsed.map(ClientEvent::name).unwrap_or("unknown");
    let label = parsed.map_or(
        crate::metrics::EventIn::Unknown,
        crate::metrics::EventIn::Client,
    );
    crate::metrics::message_in(label, size);
    let rid = frame.rid;
    // Steps held after a fresh subscription: a recovery of its table
    // supersedes them; any other request releases them first.
    let superseded = match session.held.take() {
        Some(h) if h.recovered_by(&frame) => Some(h),
        Some(h) => {
            follow(session, h.then).await;
            None
        }
        None => None,
    };
    let reply = match frame.event {
        Ok(e) => request(session, e, frame.data).await,
        Err(name) => Err(RequestError::new(
            ErrorCode::UnknownEvent,
            format!("unknown event {:?}", truncate(&name)),
        )),
    };
    answer(session, reply, superseded, event, rid).await;
    None
}

/// Sends a request's answer: its ack (when it has a `rid`) and the steps
/// that follow, or its error. Steps a recovery `superseded` are dropped
/// but for the activation, which follows the recovery's replay; a fresh
/// subscription's steps are held (see [`Held`]).
async fn answer(
    session: &mut Session,
    reply: Reply,
    superseded: Option<Held>,
    event: &str,
    rid: Option<u64>,
) {
    match reply {
        Ok(mut answer) => {
            if rid.is_some() {
                send_value(session, ServerEvent::Ack, &answer.result, rid);
            }
            if let Some(h) = superseded {
                // The recovery replayed what the held history held; the
                // subscription goes live after its replay.
                answer.then.extend(
                    h.then
                        .into_iter()
                        .filter(|t| matches!(t, Then::Activate(_))),
                );
            }
            match answer.supersedable.take() {
                Some(table) => {
                    session.held = Some(Held {
                        table,
                        then: answer.then,
                        until: tokio::time::Instant::now() + HOLD,
                    });
                }
                None => follow(session, answer.then).await,
            }
        }
        Err(e) => {
            if let Some(h) = superseded {
                follow(session, h.then).await;
            }
            if e.code == ErrorCode::BadRequest {
                crate::metrics::frame_rejected(crate::metrics::FrameRejected::Invalid);
            }
            send_error(session, &e, Some(event), rid);
        }
    }
}

/// Sends the steps held after a fresh subscription (no recovery came).
pub async fn release_held(session: &mut Session) {
    if let Some(h) = session.held.take() {
        follow(session, h.then).await;
    }
}

/// One request, by its event. Before authentication only `authenticate`
/// is accepted (anything else closes the connection 4401).
async fn request(session: &mut Session, event: ClientEvent, data: Value) -> Reply {
    if event != ClientEvent::Authenticate && session.identity.is_none() {
        crate::metrics::auth_failure(crate::metrics::AuthFailure::NotAuthenticated);
        session.outbox.close(close::UNAUTHENTICATED);
        return Err(RequestError::new(
            ErrorCode::Unauthenticated,
            "authenticate first",
        ));
    }
    match event {
        ClientEvent::SubscribeToTable => tables::subscribe(session, data).await,
        ClientEvent::UnsubscribeFromTable => tables::unsubscribe(session, data).await,
        ClientEvent::RecoverConnection => tables::recover(session, data).await,
        ClientEvent::SyncOfflineChanges => offline::sync(session, data).await,
        ClientEvent::RecordChange => record_change(session, data).await,
        ClientEvent::Heartbeat => heartbeat(session, data).await,
        ClientEvent::LoadRecords => super::records::load(session, data).await,
        ClientEvent::CursorPosition => cursor_position(session, data).await,
        ClientEvent::Selection => selection(session, data).await,
        // Authenticating twice is answered by `authenticate` itself.
        ClientEvent::Authenticate => authenticate(session, data),
    }
}

/// A control packet of the framing (Socket.IO's pings and connects).
/// Engine.IO's close ends the connection; Socket.IO's DISCONNECT only
/// ends the socket on it (see [`super::leave_socket`]).
async fn control(session: &mut Session, c: Control) -> Option<&'static str> {
    match c {
        Control::Pong | Control::Ignore => None,
        Control::Ping(payload) => {
            if let Some(pong) = session.framing().pong(&payload) {
                session.outbox.push_text(pong);
            }
            None
        }
        Control::Close => Some("client closed"),
        Control::Disconnect => {
            Box::pin(super::leave_socket(session)).await;
            None
        }
        Control::Connect { nsp, auth, binary } => {
            // A CONNECT in binary form names the msgpack parser: the
            // connection's frames are that parser's from now on.
            if let Some(parser) = binary.then(|| session.framing().binary_parser()).flatten() {
                session.outbox.choose_framing(parser);
            }
            connect(session, &nsp, auth.as_ref());
            None
        }
    }
}

fn push(session: &Session, frame: Option<bytes::Bytes>) {
    if let Some(frame) = frame {
        session.outbox.push(frame, None);
    }
}

/// A Socket.IO CONNECT (docs/protocol.md section 10): the main namespace
/// only; a token in its `auth` is checked before the connection is
/// accepted (a refusal is CONNECT_ERROR with the code, then the close).
/// Without one the client authenticates with the `authenticate` event.
fn connect(session: &mut Session, nsp: &str, auth: Option<&Value>) {
    let framing = session.framing();
    if nsp != "/" {
        push(
            session,
            framing.connect_error(nsp, "Invalid namespace", None),
        );
        return;
    }
    let token = auth
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .filter(|_| session.identity.is_none());
    let Some(token) = token else {
        push(session, framing.connected(nsp, session.conn_id()));
        return;
    };
    let req = AuthenticateReq {
        token: Some(token.to_owned()),
        user_id: None,
        user_name: None,
        avatar_url: None,
        tables: None,
    };
    match session.app.auth.authenticate(&req) {
        Ok(identity) => {
            push(session, framing.connected(nsp, session.conn_id()));
            let _ = finish_auth(session, Ok(identity));
        }
        Err(e) => {
            tracing::warn!(reason = e.reason(), error = %e, "authentication failed");
            crate::metrics::auth_failure(e.label());
            let code = ErrorCode::Unauthenticated.as_str();
            push(
                session,
                framing.connect_error(nsp, &e.to_string(), Some(code)),
            );
            session.outbox.close(close::UNAUTHENTICATED);
        }
    }
}

/// Queues what follows an ack, in order, each frame only once the
/// connection has room for it (its queue's byte bound): history is read
/// from Redis no faster than the client reads it. A connection that closes
/// meanwhile gets no more frames, but its subscribers are still activated
/// (and then removed with the connection).
async fn follow(session: &mut Session, then: Vec<Then>) {
    let mut open = true;
    for step in then {
        match step {
            Then::Frame(frame) if open => open = session.outbox.push_paced(frame).await,
            Then::Replay {
                table,
                after,
                until,
                done,
            } if open => {
                open = tables::replay(session, &table, after, until, done).await;
            }
            Then::Activate(table) => session.app.hub.activate(&table, session.conn_id()),
            Then::Frame(_) | Then::Replay { .. } => {}
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn send_error(session: &Session, e: &RequestError, event: Option<&str>, rid: Option<u64>) {
    let body = ErrorBody {
        code: e.code,
        message: &e.message,
        event,
    };
    send(session, ServerEvent::Error, &body, rid);
}

/// Authenticates with a token from the upgrade request.
pub fn authenticate_with_token(session: &mut Session, token: &str) {
    let req = AuthenticateReq {
        token: Some(token.to_owned()),
        user_id: None,
        user_name: None,
        avatar_url: None,
        tables: None,
    };
    let result = session.app.auth.authenticate(&req);
    let _ = finish_auth(session, result);
}

fn authenticate(session: &mut Session, data: Value) -> Reply {
    if session.identity.is_some() {
        return Err(RequestError::bad_request("already authenticated"));
    }
    let req: AuthenticateReq = parse("authenticate", data)?;
    let result = session.app.auth.authenticate(&req);
    finish_auth(session, result)
}

fn finish_auth(session: &mut Session, result: Result<Identity, AuthError>) -> Reply {
    match result {
        Ok(identity) => {
            let limit = session.app.config.max_connections_per_user;
            if !session.app.user_connected(&identity.user_id, limit) {
                crate::metrics::connection_refused(crate::metrics::ConnectionRefused::PerUser);
                tracing::warn!(user = %identity.user_id, limit, "too many connections for one user");
                session.outbox.close(close::RATE_LIMITED);
                return Err(RequestError::new(
                    ErrorCode::RateLimited,
                    format!("too many connections for this user (limit {limit})"),
                ));
            }
            if session.app.auth.mode() == crate::config::AuthMode::None {
                tracing::warn!(user = %identity.user_id, "development authentication (RTS_AUTH=none)");
            }
            tracing::info!(user = %identity.user_id, "authenticated");
            let body = Authenticated {
                user_id: &identity.user_id,
                connection_id: session.conn_id(),
                server_time: crate::now_ms(),
            };
            let value = to_value(&body)?;
            send(session, ServerEvent::Authenticated, &value.result, None);
            session.identity = Some(identity);
            session.app.authenticated.fetch_add(1, Ordering::Relaxed);
            crate::metrics::connection_authenticated();
            Ok(value)
        }
        Err(e) => {
            // Never log the token itself.
            tracing::warn!(reason = e.reason(), error = %e, "authentication failed");
            crate::metrics::auth_failure(e.label());
            session.outbox.close(close::UNAUTHENTICATED);
            Err(RequestError::new(ErrorCode::Unauthenticated, e.to_string()))
        }
    }
}

async fn record_change(session: &mut Session, data: Value) -> Reply {
    let req: ChangeRequest = parse("record_change", data)?;
    let user = identity(session)?;
    let mut valid = req
        .by_client(&user.user_id, session.conn_id())
        .validate(session.app.commit_limits)?;
    check_write(user, &valid)?;
    let mask = read_mask(session, valid.req.scope());
    valid.answered_to(mask.as_deref().map(ReadMask::visible))?;
    let mut result = commit(&session.app.store, &valid).await?;
    super::base_access::bind_by_write(session, &valid).await;
    masking::commit_result(&mut result, mask.as_deref());
    to_value(&result)
}

async fn heartbeat(session: &mut Session, data: Value) -> Reply {
    let req: TableReq = parse("heartbeat", data)?;
    req.validate()?;
    require_subscription(session, &req.table_id)?;
    relay(session, &req.table_id, Touch::Heartbeat, Value::Null).await?;
    let ts = Timestamp {
        timestamp: crate::now_ms(),
    };
    send(session, ServerEvent::HeartbeatAck, &ts, None);
    to_value(&ts)
}

async fn cursor_position(session: &mut Session, data: Value) -> Reply {
    let req: CursorReq = parse("cursor_position", data)?;
    req.validate()?;
    require_subscription(session, &req.table_id)?;
    let value =
        serde_json::to_value(&req.cursor).map_err(|e| RequestError::bad_request(e.to_string()))?;
    offer(session, &req.table_id, Touch::Cursor, value).await?;
    Ok(json!({}).into())
}

async fn selection(session: &mut Session, data: Value) -> Reply {
    let req: SelectionReq = parse("selection", data)?;
    req.validate()?;
    require_subscription(session, &req.table_id)?;
    let value = serde_json::to_value(&req.selection)
        .map_err(|e| RequestError::bad_request(e.to_string()))?;
    offer(session, &req.table_id, Touch::Selection, value).await?;
    Ok(json!({}).into())
}

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

/// Relays coalesced updates whose slot has come.
pub async fn flush_due(session: &mut Session) {
    let now = tokio::time::Instant::now();
    for (table, kind, value) in session.coalescer.take_due(now) {
        if session.tables.contains_key(&table) {
            if let Err(e) = gated_relay(session, &table, kind, value, now).await {
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
