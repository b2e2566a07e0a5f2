//! The base of each table, as the server holds it (docs/protocol.md 3.2):
//! `<p>:{T}:base`, a string with the base id, in the table's slot.
//!
//! Trusted writers (the HTTP API and its seed route, producers) set it;
//! a client's write may only bind a table that has no base yet, and only
//! when its token grants that base (or in development mode). A
//! subscription reads it to decide whether the base it names is the
//! table's; nothing a client merely names is ever written here.

use super::{Store, StoreError};

/// Whether a binding may replace one already held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    /// A trusted writer's: replaces any earlier base.
    Replace,
    /// A client's: binds only a table that has no base yet.
    IfUnbound,
}

/// The base the server holds for `table`, if any.
pub async fn bound(store: &Store, table: &str) -> Result<Option<String>, StoreError> {
    let mut conn = store.conn();
    redis::cmd("GET")
        .arg(store.keys.table_base(table))
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)
}

/// Binds `table` to `base`; whether the table's base is now `base`.
pub async fn bind(store: &Store, table: &str, base: &str, how: Bind) -> Result<bool, StoreError> {
    let mut conn = store.conn();
    let key = store.keys.table_base(table);
    if how == Bind::Replace {
        redis::cmd("SET")
            .arg(&key)
            .arg(base)
            .query_async::<()>(&mut conn)
            .await
            .map_err(StoreError::from_redis)?;
        return Ok(true);
    }
    // SET NX GET: the earlier value, or nil when this call bound it.
    let before: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(base)
        .arg("NX")
        .arg("GET")
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from_redis)?;
    Ok(before.is_none_or(|b| b == base))
}

/// Tables this sidecar knows to be bound already, so that a client's write
/// (every write of development mode names its base) asks Redis to bind a
/// table once, not once per write. Only ever used to skip an
/// only-if-unbound binding, which would change nothing: a stale entry
/// costs nothing. Cleared when full.
#[derive(Default)]
pub struct KnownBound(std::sync::RwLock<std::collections::HashSet<String>>);

/// Most tables [`KnownBound`] remembers before it starts over.
const KNOWN_BOUND_MAX: usize = 10_000;

impl KnownBound {
    pub fn contains(&self, table: &str) -> bool {
        crate::locks::read(&self.0).contains(table)
    }

    pub fn insert(&self, table: &str) {
        let mut known = crate::locks::write(&self.0);
        if known.len() >= KNOWN_BOUND_MAX {
            known.clear();
        }
        known.insert(table.to_owned());
    }
}
