//! The subscription caps: a connection's tables and bases together
//! (`RTS_MAX_SUBSCRIPTIONS`), and a user's on this sidecar
//! (`RTS_MAX_SUBSCRIPTIONS_PER_USER`, counted by the app). A join takes a
//! place before anything else; leaving, or a join rolled back, gives it
//! back.

use crate::protocol::RequestError;
use crate::session::Session;

/// One more table or base under the caps: the connection's (its tables
/// and bases together) and the user's on this sidecar, which counts it.
pub(super) fn take_place(session: &Session, user: &str) -> Result<(), RequestError> {
    let max = session.app.config.max_subscriptions.get();
    if session.tables.len() + session.bases.len() >= max {
        return Err(RequestError::bad_request(format!(
            "at most {max} tables and bases per connection (RTS_MAX_SUBSCRIPTIONS)"
        )));
    }
    if !session.app.subscription_added(user) {
        let max = session.app.config.max_subscriptions_per_user.get();
        return Err(RequestError::bad_request(format!(
            "at most {max} tables and bases per user on this sidecar (RTS_MAX_SUBSCRIPTIONS_PER_USER)"
        )));
    }
    Ok(())
}

/// Gives back a table's or base's place under the per-user cap.
pub(super) fn release_place(session: &Session) {
    if let Some(user) = session.identity.as_ref() {
        session.app.subscription_removed(&user.user_id);
    }
}
