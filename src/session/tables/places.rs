//! The subscription caps: a connection's tables and bases together
//! (`RTS_MAX_SUBSCRIPTIONS`), and a user's on this sidecar
//! (`RTS_MAX_SUBSCRIPTIONS_PER_USER`, counted by the app). A join takes a
//! place before anything else; leaving, or a join rolled back, gives it
//! back.

use super::port::Conn;
use crate::protocol::RequestError;

/// One more table or base under the caps: the connection's (its tables
/// and bases together) and the user's on this sidecar, which counts it.
pub(super) fn take_place<C: Conn>(conn: &C, user: &str) -> Result<(), RequestError> {
    let bounds = conn.bounds();
    let max = bounds.max_subscriptions;
    if conn.tables().len() + conn.bases().len() >= max {
        return Err(RequestError::bad_request(format!(
            "at most {max} tables and bases per connection (RTS_MAX_SUBSCRIPTIONS)"
        )));
    }
    if !conn.place_added(user) {
        let max = bounds.max_subscriptions_per_user;
        return Err(RequestError::bad_request(format!(
            "at most {max} tables and bases per user on this sidecar (RTS_MAX_SUBSCRIPTIONS_PER_USER)"
        )));
    }
    Ok(())
}

/// Gives back a table's or base's place under the per-user cap.
pub(super) fn release_place<C: Conn>(conn: &C) {
    if let Some(user) = conn.user() {
        conn.place_removed(&user.user_id);
    }
}
