//! The one edge where a failed request is answered: the error frame
//! (`["error", {code, message, event?}, rid]`), then the close its
//! [`RequestError::close`] asks for, and the logs and metrics of the
//! failure (by the stage it failed at, and by its [`Cause`]). Handlers only
//! return errors; nothing else sends, closes or logs for them.
//!
//! Data flow: `route` (a request's reply), `frame` (the rate limit, a
//! frame that does not decode, refused attachments) → [`fail`] → the
//! connection's outbox. Failures answered otherwise (a token from the
//! upgrade, a Socket.IO CONNECT's `auth`) go through [`fail_answered_by`].
//! Each failure is also offered to the audit log here (it keeps
//! authentication failures and refusals, see `audit::Audit::refused`).

use crate::auth::AuthError;
use crate::metrics::{AuthFailure, ConnectionRefused, EventIn, FrameRejected, Label};
use crate::outbox::{CloseCode, Outbox};
use crate::protocol::error::{Cause, ErrorBody};
use crate::protocol::{ErrorCode, RequestError, ServerEvent};

use super::Session;

/// Where a failure was met, for its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A decoded request refused (a `bad_request` is counted rejected).
    Request,
    /// A message that does not decode (`size`: its bytes).
    Decode { size: usize },
    /// A binary event's attachments refused.
    Attachments,
    /// A message over the rate limit.
    RateLimited,
    /// A failure not answered with an error frame.
    Unanswered,
}

/// Answers a session's failure: audits, counts and logs it, sends its
/// error frame (naming `event` when known), then closes the connection if
/// the error says so.
pub fn fail(
    session: &Session,
    e: &RequestError,
    stage: Stage,
    event: Option<&str>,
    rid: Option<u64>,
) {
    audit(session, e);
    answer(&session.outbox, e, stage, event, rid);
}

/// [`fail`] without the audit log: counts, logs, sends the error frame
/// and closes.
pub fn answer(
    outbox: &Outbox,
    e: &RequestError,
    stage: Stage,
    event: Option<&str>,
    rid: Option<u64>,
) {
    report(e, stage);
    send_error(outbox, e, event, rid);
    close_for(outbox, e);
}

/// A failure without an error frame (the token from the upgrade, a
/// CONNECT accepted before the user's cap refused it): audited, counted,
/// logged, and the close it asks for.
pub fn fail_unanswered(session: &Session, e: &RequestError) {
    fail_answered_by(session, e, || {});
}

/// A failure answered otherwise than by an error frame (`answer`, e.g. a
/// Socket.IO CONNECT_ERROR): audited, counted, logged, answered, then
/// closed.
pub fn fail_answered_by(session: &Session, e: &RequestError, answer: impl FnOnce()) {
    audit(session, e);
    answer_otherwise(&session.outbox, e, answer);
}

/// [`fail_answered_by`] without the audit log.
fn answer_otherwise(outbox: &Outbox, e: &RequestError, answer: impl FnOnce()) {
    report(e, Stage::Unanswered);
    answer();
    close_for(outbox, e);
}

/// Offers the failure to the audit log, as the connection's address and
/// user.
fn audit(session: &Session, e: &RequestError) {
    let user = session.identity.as_ref().map(|i| i.user_id.as_str());
    session.app.audit.refused(session.peer, user, e);
}

fn close_for(outbox: &Outbox, e: &RequestError) {
    if let Some(code) = e.close {
        outbox.close(code);
    }
}

/// The metrics and logs of a failure.
fn report(e: &RequestError, stage: Stage) {
    match stage {
        Stage::Request if e.code == ErrorCode::BadRequest => {
            crate::metrics::frame_rejected(FrameRejected::Invalid);
        }
        Stage::Decode { size } => {
            crate::metrics::message_in(EventIn::Invalid, size);
            crate::metrics::frame_rejected(FrameRejected::Decode);
        }
        Stage::Attachments => crate::metrics::frame_rejected(FrameRejected::Attachments),
        Stage::RateLimited => crate::metrics::rate_limited(),
        Stage::Request | Stage::Unanswered => {}
    }
    match &e.cause {
        Some(Cause::NotAuthenticated) => {
            crate::metrics::auth_failure(AuthFailure::NotAuthenticated);
        }
        Some(Cause::AuthRefused { reason, .. }) => {
            if let Some(label) = AuthFailure::from_value(reason) {
                crate::metrics::auth_failure(label);
            }
        }
        Some(Cause::TooManyConnections { .. }) => {
            crate::metrics::connection_refused(ConnectionRefused::PerUser);
        }
        _ => {}
    }
    e.trace();
}

fn send_error(outbox: &Outbox, e: &RequestError, event: Option<&str>, rid: Option<u64>) {
    let body = ErrorBody {
        code: e.code,
        message: &e.message,
        event,
    };
    let data = serde_json::to_value(&body).unwrap_or_else(|err| {
        // An error body always serializes.
        tracing::error!(error = %err, "failed to encode an error frame");
        serde_json::json!({"code": ErrorCode::Internal, "message": "failed to encode a frame"})
    });
    crate::metrics::message_out(ServerEvent::Error);
    outbox.push(outbox.framing().frame(ServerEvent::Error, &data, rid), None);
}

/// A request other than `authenticate` before authenticating: refused,
/// and the connection closed 4401.
pub fn not_authenticated() -> RequestError {
    RequestError::new(ErrorCode::Unauthenticated, "authenticate first")
        .closing(CloseCode::Unauthenticated)
        .caused_by(Cause::NotAuthenticated)
}

/// A refused token: `unauthenticated` with the reason, then close 4401.
pub fn auth_refused(e: &AuthError) -> RequestError {
    RequestError::new(ErrorCode::Unauthenticated, e.to_string())
        .closing(CloseCode::Unauthenticated)
        .caused_by(Cause::AuthRefused {
            reason: e.reason(),
            error: e.to_string(),
        })
}

/// A user over `RTS_MAX_CONNECTIONS_PER_USER`: `rate_limited`, then close
/// 4429.
pub fn too_many_connections(user: &str, limit: usize) -> RequestError {
    RequestError::new(
        ErrorCode::RateLimited,
        format!("too many connections for this user (limit {limit})"),
    )
    .closing(CloseCode::RateLimited)
    .caused_by(Cause::TooManyConnections {
        user: user.to_owned(),
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{outbox, OutboxReceiver};
    use crate::protocol::framing::WS_JSON;
    use crate::store::StoreError;
    use serde_json::Value;

    fn connection() -> (Outbox, OutboxReceiver) {
        outbox("c1".into(), &WS_JSON, 16, 1 << 20)
    }

    fn sent(rx: &mut OutboxReceiver) -> Value {
        let frame = rx.try_next().expect("an error frame");
        serde_json::from_slice(&frame).expect("a JSON frame")
    }

    #[test]
    fn a_request_before_authenticate_is_answered_then_closed_4401() {
        let (outbox, mut rx) = connection();
        answer(
            &outbox,
            &not_authenticated(),
            Stage::Request,
            Some("heartbeat"),
            Some(7),
        );
        let frame = sent(&mut rx);
        assert_eq!(frame[0], "error");
        assert_eq!(frame[1]["code"], "unauthenticated");
        assert_eq!(frame[1]["event"], "heartbeat");
        assert_eq!(rx.close_code(), Some(4401));
    }

    #[test]
    fn a_refused_token_closes_4401() {
        assert_eq!(
            auth_refused(&AuthError::Missing).close,
            Some(CloseCode::Unauthenticated)
        );
    }

    #[test]
    fn a_user_over_the_connection_cap_closes_4429() {
        let e = too_many_connections("u1", 2);
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.message, "too many connections for this user (limit 2)");
        assert_eq!(e.close, Some(CloseCode::RateLimited));
    }

    #[test]
    fn a_bad_request_is_answered_and_the_connection_stays() {
        let (outbox, mut rx) = connection();
        let e = RequestError::bad_request("no");
        answer(&outbox, &e, Stage::Request, None, None);
        assert_eq!(sent(&mut rx)[1]["message"], "no");
        assert_eq!(rx.close_code(), None);
    }

    #[test]
    fn a_storage_failure_is_answered_and_the_connection_stays() {
        let (outbox, mut rx) = connection();
        let e = RequestError::from(StoreError::Reply("odd".into()));
        answer(&outbox, &e, Stage::Request, None, None);
        assert_eq!(sent(&mut rx)[1]["code"], "internal");
        assert_eq!(rx.close_code(), None);
    }

    #[test]
    fn an_unanswered_failure_sends_no_frame_but_closes() {
        let (outbox, mut rx) = connection();
        answer_otherwise(&outbox, &auth_refused(&AuthError::Missing), || {});
        assert!(rx.try_next().is_none());
        assert_eq!(rx.close_code(), Some(4401));
    }
}
