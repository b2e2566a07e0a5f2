//! `GET /api/v1/audit`: the audit log read oldest first, after a point,
//! filtered by action and user, in bounded pages.
//!
//! Data flow: `http::api` → [`Query::parse`] (the query string, bounds
//! checked) → [`read`] (XRANGE in chunks, filtered) → `{entries, next}`.
//! A page holds at most `limit` entries and scans at most [`MAX_SCAN`]
//! entries; `next` (the last id looked at) continues it as `since`.

use serde_json::{json, Map, Value};

use super::AuditAction;
use crate::protocol::RequestError;
use crate::store::audit::{range, StoredEntry};
use crate::store::Store;

/// Entries a page answers by default, and at most.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// Entries one page looks at, at most (filters that match rarely then
/// answer fewer entries, with `next` to go on).
pub const MAX_SCAN: usize = 10_000;
/// Entries read per XRANGE.
const CHUNK: usize = 500;

/// A page asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// XRANGE's start: `-`, `(<id>` after an id, or `<ms>` from a time.
    start: String,
    action: Option<AuditAction>,
    user: Option<String>,
    limit: usize,
}

impl Query {
    /// The query string's `since`, `action`, `user` and `limit`.
    pub fn parse(query: &str) -> Result<Query, RequestError> {
        let mut q = Query {
            start: "-".to_owned(),
            action: None,
            user: None,
            limit: DEFAULT_LIMIT,
        };
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "since" => q.start = since(&v)?,
                "action" => {
                    q.action = Some(AuditAction::from_name(&v).ok_or_else(|| {
                        RequestError::bad_request(format!("unknown audit action {v:?}"))
                    })?);
                }
                "user" if !v.is_empty() && v.len() <= 128 => q.user = Some(v.into_owned()),
                "user" => return Err(RequestError::bad_request("user must be 1..=128 bytes")),
                "limit" => {
                    q.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            RequestError::bad_request(format!("limit must be 1..={MAX_LIMIT}"))
                        })?;
                }
                _ => {}
            }
        }
        Ok(q)
    }

    fn matches(&self, e: &StoredEntry) -> bool {
        self.action
            .is_none_or(|a| e.get("action") == Some(a.as_str()))
            && self
                .user
                .as_deref()
                .is_none_or(|u| e.get("actor") == Some(u))
    }
}

/// `since`: a stream id (the page starts after it) or milliseconds (the
/// page starts at that time).
fn since(v: &str) -> Result<String, RequestError> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    match v.split_once('-') {
        Some((ms, seq)) if digits(ms) && digits(seq) => Ok(format!("({v}")),
        None if digits(v) => Ok(v.to_owned()),
        _ => Err(RequestError::bad_request(
            "since must be a stream id (<ms>-<seq>) or milliseconds",
        )),
    }
}

/// One page: `{"entries": [...], "next": <id> | null}`.
pub async fn read(store: &Store, q: &Query) -> Result<Value, RequestError> {
    let mut entries = Vec::new();
    let mut start = q.start.clone();
    let mut scanned = 0;
    let mut next = None;
    'scan: while scanned < MAX_SCAN {
        let chunk = range(store, &start, "+", CHUNK.min(MAX_SCAN - scanned), false).await?;
        for e in &chunk {
            scanned += 1;
            next = Some(e.id.clone());
            if q.matches(e) {
                entries.push(to_json(e));
                if entries.len() == q.limit {
                    break 'scan;
                }
            }
        }
        match chunk.last() {
            Some(last) if chunk.len() == CHUNK => start = format!("({}", last.id),
            _ => {
                next = None;
                break;
            }
        }
    }
    Ok(json!({"entries": entries, "next": next}))
}

/// An entry as the API and the sink give it: its id, `ts` as a number,
/// the other fields as stored.
pub fn to_json(e: &StoredEntry) -> Value {
    let mut map = Map::new();
    map.insert("id".to_owned(), Value::String(e.id.clone()));
    for (name, value) in &e.fields {
        let v = match (name.as_str(), value.parse::<u64>()) {
            ("ts", Ok(ms)) => Value::from(ms),
            _ => Value::String(value.clone()),
        };
        map.insert(name.clone(), v);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_an_id_exclusively_and_milliseconds_inclusively() {
        assert_eq!(since("5-1"), Ok("(5-1".to_owned()));
        assert_eq!(since("1700000000000"), Ok("1700000000000".to_owned()));
        assert!(since("5-").is_err());
        assert!(since("x").is_err());
    }

    #[test]
    fn a_query_refuses_an_unknown_action_and_an_unbounded_limit() {
        assert!(Query::parse("action=nope").is_err());
        assert!(Query::parse("limit=100000").is_err());
        let q = Query::parse("action=record_deleted&user=u1&limit=5").expect("a query");
        assert_eq!(q.action, Some(AuditAction::RecordDeleted));
        assert_eq!(q.limit, 5);
    }
}
