//! What a request handler answers (docs/protocol.md section 3): an
//! [`Answer`], the ack's result and the steps that follow it in order, or a
//! `RequestError`; and the helpers every handler shares (who is asking,
//! refusals, frames sent outside the reply). A leaf of `session`: the
//! handlers use it, it uses none of them.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::Session;
use crate::auth::Identity;
use crate::change::ids::base_of_stream;
use crate::change::StreamId;
use crate::change::ValidChange;
use crate::grant::{Access, ReadMask};
use crate::protocol::ServerEvent;
use crate::protocol::{ErrorCode, RequestError};

/// A handler's answer: the ack's result, then what must follow the ack, in
/// this order (e.g. `table_users`, the history, then the subscriber made
/// live in the hub).
pub struct Answer {
    pub result: Value,
    pub then: Vec<Then>,
    /// A fresh subscription to this table: what follows its ack may be
    /// superseded by a `recover_connection` of the table sent right after
    /// (see [`Held`]).
    pub supersedable: Option<String>,
}

/// The steps after a fresh subscription's ack, held for a moment
/// (docs/protocol.md 3.1, "subscribe then recover"). Clients that reconnect
/// send `subscribe_to_table` and `recover_connection {lastEventId}` back to
/// back. Sent at once, the subscription's latest events and live events
/// would reach the client before the older events the recovery replays:
/// out of stream order, some twice. Held, they are dropped when the next
/// request is that recovery (its replay covers them, and the subscription
/// goes live after it), and sent as they were otherwise: when any other
/// request comes, or after [`HOLD`].
pub struct Held {
    pub table: String,
    pub then: Vec<Then>,
    pub until: tokio::time::Instant,
}

impl Held {
    /// Whether `frame` recovers the held table (then it supersedes the
    /// held steps instead of following them).
    pub fn recovered_by(&self, frame: &crate::protocol::framing::ClientFrame) -> bool {
        frame.event == Ok(crate::protocol::messages::ClientEvent::RecoverConnection)
            && frame
                .data
                .get("tableId")
                .and_then(serde_json::Value::as_str)
                == Some(self.table.as_str())
    }

    /// Supersedes the held steps by a recovery's `then`: the recovery
    /// replayed what the held history held, so of the held steps only the
    /// activation follows, after the replay.
    pub fn supersede(self, then: &mut Vec<Then>) {
        then.extend(
            self.then
                .into_iter()
                .filter(|t| matches!(t, Then::Activate(_))),
        );
    }
}

/// How long the steps after a fresh subscription's ack wait for a
/// recovery of the same table.
pub const HOLD: std::time::Duration = std::time::Duration::from_millis(100);

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
            supersedable: None,
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
    signed_in(session.identity.as_ref())
}

/// [`identity`] of whoever `user` is (`None`: not authenticated).
pub fn signed_in(user: Option<&Identity>) -> Result<&Identity, RequestError> {
    user.ok_or_else(|| RequestError::new(ErrorCode::Unauthenticated, "authenticate first"))
}

/// The fields of `stream` (a table id, or a base's `{B}`, whose events
/// carry no table fields) this session may not read; `None` when it reads
/// them all.
pub fn read_mask(session: &Session, stream: &str) -> Option<Arc<ReadMask>> {
    mask_of(session.identity.as_ref(), stream)
}

/// [`read_mask`] of whoever `user` is (`None`: not authenticated).
pub fn mask_of(user: Option<&Identity>, stream: &str) -> Option<Arc<ReadMask>> {
    if base_of_stream(stream).is_some() {
        return None;
    }
    user?.grants.read_mask(stream)
}

/// Whether `user` may make this change (docs/protocol.md 2.1): write access
/// to its table, and to every field it touches (clients write record
/// changes only). Checked before anything is sent to Redis.
pub fn check_write(user: &Identity, valid: &ValidChange) -> Result<(), RequestError> {
    let table = valid.req.scope();
    let grant = user
        .grants
        .table(table)
        .filter(|g| g.access == Access::ReadWrite)
        .ok_or_else(|| forbidden("write", table))?;
    match grant.unwritable(&valid.fields) {
        Some(field) => Err(RequestError::new(
            ErrorCode::Forbidden,
            format!("no write access to field {field} of table {table}"),
        )),
        None => Ok(()),
    }
}

/// v1.3 (2.2): refuses a path that does not apply row grants yet, when
/// `user`'s grant on `table` carries `rows`. Such a path would show or
/// touch records outside the user's rows, so it is `forbidden` rather than
/// served whole; `load_records` (`session::records`) and `record_change`
/// (`session::row_write`) apply them.
pub fn rows_unserved(user: &Identity, table: &str, path: &str) -> Result<(), RequestError> {
    if user.grants.rows(table).is_none() {
        return Ok(());
    }
    crate::metrics::row_grant_refused();
    tracing::debug!(
        table,
        path,
        "refused: row grants are not applied on this path yet"
    );
    Err(RequestError::new(
        ErrorCode::Forbidden,
        format!("{path} on table {table} is not available under a row grant"),
    ))
}

pub fn forbidden(what: &str, table: &str) -> RequestError {
    RequestError::new(
        ErrorCode::Forbidden,
        format!("no {what} access to table {table}"),
    )
}
