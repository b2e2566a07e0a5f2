//! Which base's events a connection may read, and which binding a client's
//! write may make (docs/protocol.md 3.2). A subscription naming base `B`
//! for table `T` reads `B`'s events when the token grants `B` (`bases`),
//! or when the server holds `B` as `T`'s base (`store::bases`); never
//! because the client named it. A client's write binds a table that has
//! no base yet, to the base it names, when the token grants that base or
//! in development mode; it never replaces a binding.

use super::Session;
use crate::change::ValidChange;
use crate::config::AuthMode;
use crate::store::bases::{self, Bind};
use crate::store::StoreError;

/// Whether the connection may read base `base`'s events through its
/// subscription to `table` (already checked readable).
pub async fn may_read(session: &Session, table: &str, base: &str) -> Result<bool, StoreError> {
    if session
        .identity
        .as_ref()
        .is_some_and(|i| i.bases.can_read(base))
    {
        return Ok(true);
    }
    let held = bases::bound(&session.app.store, table).await?;
    Ok(held.as_deref() == Some(base))
}

/// After a client's committed write: binds its table to the base it names
/// when that is allowed and the table has none. A failure only logs: the
/// write itself stands, and a later write binds it.
pub async fn bind_by_write(session: &Session, valid: &ValidChange) {
    let (Some(base), Some(table)) = (valid.req.base_id.as_deref(), valid.req.table_id.as_deref())
    else {
        return;
    };
    let app = &session.app;
    let granted = session
        .identity
        .as_ref()
        .is_some_and(|i| i.bases.can_read(base));
    if !(granted || app.auth.mode() == AuthMode::None) || app.known_bound.contains(table) {
        return;
    }
    match bases::bind(&app.store, table, base, Bind::IfUnbound).await {
        Ok(_) => app.known_bound.insert(table),
        Err(e) => tracing::warn!(table, base, error = %e, "could not bind the table to its base"),
    }
}
