//! One client message, before it is a request: the rate limit (a message
//! over it is refused `rate_limited`; sustained abuse closes 4429), the
//! framing's decoding (a control packet goes to [`socketio_connect`], a
//! message that does not decode is refused), a Socket.IO binary event's
//! attachments (collected in [`Partial`] until complete), and the steps
//! held after a fresh subscription (released first, unless the message
//! recovers that table).
//!
//! Data flow: the read loop → [`handle_frame`] → `route::dispatch` for a
//! complete request; failures here go to the [`edge`].

use super::attachments::{Attach, Partial};
use super::edge::{self, Stage};
use super::rate_limit::Verdict;
use super::{route, socketio_connect, steps, Session};
use crate::outbox::CloseCode;
use crate::protocol::framing::Inbound;
use crate::protocol::{ErrorCode, RequestError, SessionEnd};

/// A WebSocket ping from the client: it takes a token like any message.
pub fn count_ping(session: &mut Session) {
    match session.limiter.check(tokio::time::Instant::now()) {
        Verdict::Allow => {}
        Verdict::Reject => crate::metrics::rate_limited(),
        Verdict::Close => abuse(session),
    }
}

fn abuse(session: &Session) {
    let user = session.identity.as_ref().map(|i| i.user_id.as_str());
    session.app.audit.closed(
        session.peer,
        user,
        CloseCode::RateLimited,
        "sustained rate-limit abuse",
    );
    crate::metrics::rate_limited();
    tracing::warn!("sustained rate-limit abuse: closing 4429");
    session.outbox.close(CloseCode::RateLimited);
}

/// Handles one client message; how the connection ends, if it does.
pub async fn handle_frame(session: &mut Session, bytes: &[u8], text: bool) -> Option<SessionEnd> {
    if !within_rate(session, bytes, text) {
        return None;
    }
    // Engine.IO's own packets (a pong, a ping) may come between a binary
    // event and its attachments: they leave it waiting.
    if session.partial.is_some() && text {
        if let Ok(Inbound::Control(c)) = session.framing().decode(bytes, text) {
            return socketio_connect::control(session, c).await;
        }
    }
    if session.partial.is_some() && !attachment(session, bytes, text).await {
        return None;
    }
    if session.held.is_some() {
        release_held_before(session, bytes, text).await;
    }
    match session.framing().decode(bytes, text) {
        Ok(Inbound::Frame(f)) => route::dispatch(session, f, bytes.len()).await,
        Ok(Inbound::Control(c)) => return socketio_connect::control(session, c).await,
        Ok(Inbound::Partial { frame, attachments }) => {
            let rid = frame.rid;
            let due = tokio::time::Instant::now() + attachment_deadline(session);
            let authenticated = session.identity.is_some();
            let (partial, refused) = Partial::new(frame, attachments, authenticated, due);
            session.partial = Some(Box::new(partial));
            if let Some(e) = refused {
                edge::fail(session, &e, Stage::Attachments, None, rid);
            }
        }
        Err(bad) => {
            let stage = Stage::Decode { size: bytes.len() };
            edge::fail(session, &bad.error, stage, None, bad.rid);
        }
    }
    None
}

/// Takes a token for the message; false when it is refused (answered
/// `rate_limited`, or the connection closed for abuse).
fn within_rate(session: &mut Session, bytes: &[u8], text: bool) -> bool {
    match session.limiter.check(tokio::time::Instant::now()) {
        Verdict::Allow => true,
        Verdict::Reject => {
            let e = RequestError::new(ErrorCode::RateLimited, "too many messages; slow down");
            let rid = match session.framing().decode(bytes, text) {
                Ok(Inbound::Frame(f) | Inbound::Partial { frame: f, .. }) => f.rid,
                Ok(Inbound::Control(_)) => None,
                Err(b) => b.rid,
            };
            edge::fail(session, &e, Stage::RateLimited, None, rid);
            false
        }
        Verdict::Close => {
            abuse(session);
            false
        }
    }
}

/// A message while a binary event waits for its attachments: one of
/// them, or (a text message) the refusal of the waiting event. True when
/// the message is then handled on its own.
async fn attachment(session: &mut Session, bytes: &[u8], text: bool) -> bool {
    let Some(partial) = session.partial.take() else {
        return true;
    };
    let (waiting, step) = partial.add(bytes, text, session.app.config.max_frame_bytes.get());
    session.partial = waiting.map(Box::new);
    match step {
        Attach::Wait => return false,
        Attach::Complete(frame) => {
            route::dispatch(session, frame, bytes.len()).await;
            return false;
        }
        Attach::Refused(e, rid) => {
            edge::fail(session, &e, Stage::Attachments, None, rid);
        }
        Attach::Dropped => {}
    }
    // The text message that came instead is handled on its own.
    text
}

/// How long a binary event's attachments may take to arrive: Socket.IO's
/// ping timeout, the time a silent client is given anyway.
fn attachment_deadline(session: &Session) -> std::time::Duration {
    session.app.config.socketio_ping_timeout
}

/// A binary event whose attachments did not all arrive in time is refused
/// and its bytes freed.
pub fn expire_partial(session: &mut Session) {
    let Some(partial) = session.partial.take() else {
        return;
    };
    tracing::info!("binary attachments did not arrive in time");
    match partial.expired() {
        Some((e, rid)) => edge::fail(session, &e, Stage::Attachments, None, rid),
        None => crate::metrics::frame_rejected(crate::metrics::FrameRejected::Attachments),
    }
}

/// Steps held after a fresh subscription go out before the next request,
/// unless that request recovers the same table (then `route::dispatch`
/// lets the recovery supersede them). They are sent at the reader's pace,
/// so the request waits meanwhile as its raw bytes, never decoded: a
/// decoded frame can be many times its size.
async fn release_held_before(session: &mut Session, bytes: &[u8], text: bool) {
    let recovers = match session.framing().decode(bytes, text) {
        Ok(Inbound::Frame(f)) => session.held.as_ref().is_some_and(|h| h.recovered_by(&f)),
        _ => false,
    };
    if !recovers {
        steps::release_held(session).await;
    }
}
