//! A view's filter in Redis (v1.3, docs/protocol.md 3.5): written and
//! announced by `rtsync_view_set`, read by `rtsync_view_get`
//! (`lua/views.lua`), each one `FCALL` naming every key in KEYS.
//!
//! Data flow: `PUT /api/v1/sync/tables/:t/views/:v` (`http::views`) →
//! [`set`] → the key, the table's `ver` hash and a `view` stream entry;
//! every sidecar's tailer reads the entry (`view::Views::apply`), and a
//! sidecar that has not seen the view loads it with [`get`].

use redis::Value;

use super::tailer::{bytes, text};
use super::{Store, StoreError};
use crate::protocol::StreamId;

/// The `userId` of a view event written through the HTTP API.
pub const API_USER: &str = "api";

/// What a view's key and version hold: the filter's JSON text (`None`:
/// no filter) and the view's version (0: never set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredView {
    pub filter: Option<String>,
    pub version: u64,
}

/// Stores `filter` (JSON object text; `None` removes it) as the view's
/// filter and appends its `view` event; the event's id and the view's new
/// version.
pub async fn set(
    store: &Store,
    table: &str,
    view: &str,
    filter: Option<&str>,
) -> Result<(StreamId, u64), StoreError> {
    let keys = store.keys.view_set_keys(table, view);
    let header = serde_json::json!({"viewId": view, "userId": API_USER, "tableId": table});
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("rtsync_view_set")
        .arg(keys.len())
        .arg(&keys[..])
        .arg(header.to_string())
        .arg(filter.unwrap_or(""))
        .arg(store.retention_ms);
    let reply: Value = store.fcall_durable(&cmd).await?;
    let bad = || StoreError::Reply(format!("rtsync_view_set answered {reply:?}"));
    let Value::Array(parts) = &reply else {
        return Err(bad());
    };
    let id = parts
        .first()
        .cloned()
        .and_then(text)
        .and_then(|s| StreamId::parse(&s));
    let version = parts.get(1).and_then(as_u64);
    match (id, version) {
        (Some(id), Some(version)) => Ok((id, version)),
        _ => Err(bad()),
    }
}

/// The view's stored filter and version, read together.
pub async fn get(store: &Store, table: &str, view: &str) -> Result<StoredView, StoreError> {
    let keys = store.keys.view_get_keys(table, view);
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("rtsync_view_get")
        .arg(keys.len())
        .arg(&keys[..])
        .arg(view);
    let reply: Value = store.fcall_read(&cmd).await?;
    stored(reply).ok_or_else(|| StoreError::Reply("rtsync_view_get: unexpected reply".into()))
}

fn stored(reply: Value) -> Option<StoredView> {
    let Value::Array(mut parts) = reply else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let version = parts.pop().as_ref().and_then(as_u64)?;
    let filter = match parts.pop()? {
        Value::Nil => None,
        v => Some(String::from_utf8(bytes(v)?).ok()?),
    };
    Some(StoredView { filter, version })
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other.clone())?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_never_set_reads_as_no_filter_at_version_zero() {
        let got = stored(Value::Array(vec![Value::Nil, Value::Int(0)]));
        assert_eq!(
            got,
            Some(StoredView {
                filter: None,
                version: 0
            })
        );
    }

    #[test]
    fn a_reply_of_another_shape_is_refused() {
        assert_eq!(stored(Value::Nil), None);
        assert_eq!(stored(Value::Array(vec![Value::Int(1)])), None);
    }
}
