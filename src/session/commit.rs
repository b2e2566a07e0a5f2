//! `record_change`: one client edit, validated already (see
//! [`super::request`]), checked against the user's write grants, committed
//! through the function library, and answered with its masked
//! `CommitResult`.
//!
//! Data flow: `route` → [`record_change`] → `store::commit` → the ack;
//! subscribers get the event from the stream, not from here.

use super::reply::{check_write, identity, read_mask, to_value, Reply};
use super::Session;
use crate::change::ValidChange;
use crate::grant::{masking, ReadMask};
use crate::store::commit::commit;

/// Commits a client's change (write access checked first) and answers
/// with its result, masked for the writer.
pub async fn record_change(session: &mut Session, mut valid: ValidChange) -> Reply {
    let user = identity(session)?;
    check_write(user, &valid)?;
    let mask = read_mask(session, valid.req.scope());
    valid.answered_to(mask.as_deref().map(ReadMask::visible))?;
    let mut result = match user.grants.rows(valid.req.scope()) {
        Some(rows) => super::row_write::commit_in_rows(session, &rows, &valid).await?,
        None => commit(&session.app.store, &valid).await?,
    };
    session
        .app
        .audit
        .committed(session.peer, &user.user_id, &valid, result.status);
    super::base_access::bind_by_write(session, &valid).await;
    masking::commit_result(&mut result, mask.as_deref());
    to_value(&result)
}
