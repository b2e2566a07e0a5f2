//! What a request handler answers (docs/protocol.md section 3): an
//! [`Answer`], the ack's result and the steps that follow it in order, or a
//! `RequestError`; and the helpers every handler shares (who is asking,
//! refusals, frames sent outside the reply). A leaf of `session`: the
//! handlers use it, it uses none of them.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::Session;
use crate::auth::Identity;
use crate::change::StreamId;
use crate::protocol::ServerEvent;
use crate::protocol::{ErrorCode, RequestError};

/// A handler's answer: the ack's result, then what must follow the ack, in
/// this order (e.g. `table_users`, the history, then the subscriber made
/// live in the hub).
pub struct Answer {
    pub result: Value,
    pub then: Vec<Then>,
}

/// One step after an ack.
pub enum Then {
    /// A frame already encoded (bounded in size by its maker).
    Frame(Bytes),
    /// Replays `(after, until]` of the stream `table` (a table id or a
    /// base's `{B}`) as `missed_events` frames, read page by page only as
    /// the connection drains; then `done` (`connection_recovered`), or
    /// `resync_required` if a page cannot be read.
    Replay {
        table: String,
        after: StreamId,
        until: StreamId,
        done: Option<Bytes>,
    },
    /// The pending subscriber of `table` goes live in the hub.
    Activate(String),
}

impl From<Value> for Answer {
    fn from(result: Value) -> Answer {
        Answer {
            result,
            then: Vec::new(),
        }
    }
}

pub type Reply = Result<Answer, RequestError>;

/// Queues a frame outside the reply (e.g. `authenticated`,
/// `heartbeat_ack`, `offline_changes`), counted.
pub fn send<T: Serialize + ?Sized>(
    session: &Session,
    event: ServerEvent,
    data: &T,
    rid: Option<u64>,
) {
    let data = serde_json::to_value(data).unwrap_or_else(|e| {
        // Our own payload types always serialize.
        tracing::error!(event = event.name(), error = %e, "failed to encode an outgoing frame");
        serde_json::json!({"code": ErrorCode::Internal, "message": "failed to encode a frame"})
    });
    send_value(session, event, &data, rid);
}

/// [`send`] of a payload that is a JSON value already (an ack's result):
/// encoded as it is, not copied first.
pub fn send_value(session: &Session, event: ServerEvent, data: &Value, rid: Option<u64>) {
    crate::metrics::message_out(event);
    session
        .outbox
        .push(session.framing().frame(event, data, rid), None);
}

pub fn to_value<T: Serialize>(v: &T) -> Reply {
    serde_json::to_value(v)
        .map(Answer::from)
        .map_err(|e| RequestError::new(ErrorCode::Internal, e.to_string()))
}

pub fn identity(session: &Session) -> Result<&Identity, RequestError> {
    session
        .identity
        .as_ref()
        .ok_or_else(|| RequestError::new(ErrorCode::Unauthenticated, "authenticate first"))
}

pub fn forbidden(what: &str, table: &str) -> RequestError {
    RequestError::new(
        ErrorCode::Forbidden,
        format!("no {what} access to table {table}"),
    )
}
