//! Routing of one decoded request (docs/protocol.md section 3): counted
//! by its event, let through the authentication gate (before
//! authentication only `authenticate`; anything else is refused and the
//! connection closed 4401), parsed once into a typed [`Request`], and given
//! to its handler. The handler's [`Reply`] goes to [`steps::answer`]: the
//! ack and what follows it, or the error through the [`super::edge`].
//!
//! Data flow: `frame::handle_frame` → [`dispatch`] → [`Request::parse`] →
//! [`handle`] → one handler module per idea (`auth`, `tables`, `commit`,
//! `offline`, `presence_relay`, `records`, `record_history`, `undo`) →
//! [`steps::answer`].

use serde_json::Value;

use super::edge;
use super::reply::Reply;
use super::request::{Caller, Request};
use super::{
    auth, commit, offline, presence_relay, record_history, records, steps, tables, undo, Session,
};
use crate::protocol::framing::ClientFrame;
use crate::protocol::messages::ClientEvent;
use crate::protocol::{ErrorCode, RequestError};
use crate::store::undo::Direction;

/// Dispatches one decoded request (`size`: its message's bytes) and
/// answers it.
pub async fn dispatch(session: &mut Session, frame: ClientFrame, size: usize) {
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
        Some(h) if h.recovered_by(&frame) => Some(*h),
        Some(h) => {
            steps::follow(session, h.then).await;
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
    steps::answer(session, reply, superseded, event, rid).await;
}

/// One request, by its event: through the gate, parsed, handled.
async fn request(session: &mut Session, event: ClientEvent, data: Value) -> Reply {
    admit(session, event)?;
    let caller = Caller {
        identity: session.identity.as_ref(),
        conn_id: session.conn_id(),
        limits: session.app.commit_limits,
        max_batch: session.app.config.max_batch,
    };
    let request = Request::parse(event, data, &caller)?;
    handle(session, request).await
}

/// The authentication gate, before the payload is read: only
/// `authenticate` before authentication (anything else closes 4401), and
/// `authenticate` only once.
fn admit(session: &Session, event: ClientEvent) -> Result<(), RequestError> {
    let authenticated = session.identity.is_some();
    match event {
        ClientEvent::Authenticate if authenticated => {
            Err(RequestError::bad_request("already authenticated"))
        }
        ClientEvent::Authenticate => Ok(()),
        _ if authenticated => Ok(()),
        _ => Err(edge::not_authenticated()),
    }
}

/// Gives a request to its handler.
async fn handle(session: &mut Session, request: Request) -> Reply {
    match request {
        Request::Authenticate(req) => auth::authenticate(session, &req),
        Request::SubscribeToTable(req) => {
            let (table, scope) = (req.table_id.clone(), req.relay);
            let reply = tables::subscribe(session, req).await;
            if reply.is_ok() {
                presence_relay::relay_scope(session, &table, scope);
            }
            reply
        }
        Request::UnsubscribeFromTable(req) => tables::unsubscribe(session, req).await,
        Request::RecoverConnection(req) => tables::recover(session, req).await,
        Request::SyncOfflineChanges(changes) => offline::sync(session, changes).await,
        Request::RecordChange(change) => commit::record_change(session, *change).await,
        Request::Heartbeat(req) => presence_relay::heartbeat(session, req).await,
        Request::LoadRecords(req) => records::load(session, req).await,
        Request::RecordHistory(req) => record_history::history(session, req).await,
        Request::CursorPosition(req) => presence_relay::cursor_position(session, req).await,
        Request::Selection(req) => presence_relay::selection(session, req).await,
        Request::Editing(req) => presence_relay::editing(session, req).await,
        Request::Viewport(req) => presence_relay::viewport(session, req).await,
        Request::Undo(req) => undo::undo(session, req, Direction::Undo).await,
        Request::Redo(req) => undo::undo(session, req, Direction::Redo).await,
    }
}

/// An unknown event's name as its error quotes it: at most 64 characters.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
