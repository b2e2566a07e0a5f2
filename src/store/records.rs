//! The table's state with versions (docs/protocol.md v1.1 `load_records` and the
//! seed route): pages of record states read by `rtsync_load` and states
//! written by `rtsync_seed` (`lua/records.lua`). One `FCALL` each: a page of
//! 500 records is one round trip, and a seed never interleaves with a
//! commit of the same table.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Store, StoreError};
use crate::change::ids::check_id;
use crate::change::rules::MAX_VERSION;
use crate::change::value::json_len;
use crate::change::Visible;
use crate::change::{ChangeError, Located};
use crate::protocol::{ErrorCode, RequestError};

/// Most records in one page or one list of ids.
pub const MAX_PAGE: usize = 1000;
/// Records per page when the client does not say.
pub const DEFAULT_PAGE: usize = 500;

/// What to load: a page after a record id, or the listed records.
#[derive(Debug, Clone)]
pub enum Load {
    Page {
        after: Option<String>,
        limit: usize,
    },
    /// Each id once, in the order first given.
    Ids(Vec<String>),
}

impl Load {
    /// Checks the request (ids, limits) the way `load_records` documents it.
    pub fn new(
        record_ids: Option<Vec<String>>,
        after: Option<String>,
        limit: Option<usize>,
    ) -> Result<Load, RequestError> {
        if let Some(ids) = record_ids {
            if ids.len() > MAX_PAGE {
                return Err(RequestError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("at most {MAX_PAGE} recordIds"),
                ));
            }
            let mut seen = std::collections::HashSet::with_capacity(ids.len());
            let mut unique = Vec::with_capacity(ids.len());
            for id in ids {
                check_id("recordIds[]", &id)?;
                if seen.insert(id.clone()) {
                    unique.push(id);
                }
            }
            return Ok(Load::Ids(unique));
        }
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(RequestError::bad_request(format!(
                "limit must be 1..={MAX_PAGE}"
            )));
        }
        if let Some(a) = &after {
            check_id("after", a)?;
        }
        Ok(Load::Page { after, limit })
    }
}

/// A page of record states: `{records, next?, asOf}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordPage {
    pub records: Vec<RecordState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Listed ids not read because the page reached its byte bound: ask
    /// for them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<Vec<String>>,
    pub as_of: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordState {
    pub record_id: String,
    pub version: u64,
    pub deleted: bool,
    pub fields: serde_json::Map<String, Value>,
}

/// Reads one page (or the listed records) of `table`, at most `max_bytes`
/// of record states (but always one record): the function stops reading
/// there, so a reply never grows with what is asked. For a reader of
/// `mask`, the function leaves out the fields it hides and counts only the
/// bytes the reader receives, so where its page is cut never depends on
/// them.
///
/// The call names each record it reads in KEYS: for a page, the ids the
/// index lists are read first, and the function answers `{"retry":true}`
/// when a record was added in between (then the ids are read again).
pub async fn load(
    store: &Store,
    table: &str,
    what: &Load,
    max_bytes: usize,
    mask: Option<Visible<'_>>,
) -> Result<RecordPage, StoreError> {
    for _ in 0..PAGE_ATTEMPTS {
        let keys = match what {
            Load::Page { after, limit } => {
                let ids = page_ids(store, table, after.as_deref(), *limit).await?;
                store.keys.load_keys(table, &ids)
            }
            Load::Ids(ids) => store.keys.load_keys(table, ids),
        };
        let reply: String = store
            .fcall_read(&load_call(&keys, what, max_bytes, mask))
            .await?;
        if reply != RETRY {
            return serde_json::from_str(&reply)
                .map_err(|e| StoreError::Reply(format!("{e}: {reply}")));
        }
    }
    Err(StoreError::Reply(format!(
        "the record index of {table} kept changing during {PAGE_ATTEMPTS} page reads"
    )))
}

/// How often a page is read again when records are added meanwhile.
const PAGE_ATTEMPTS: usize = 5;
/// `rtsync_load`'s answer when the page's ids changed since they were read.
const RETRY: &str = r#"{"retry":true}"#;

/// The ids a page lists: those after `after` in the record index, at most
/// `limit` (what `rtsync_load` reads for the page).
async fn page_ids(
    store: &Store,
    table: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let from = match after {
        Some(a) if !a.is_empty() => format!("({a}"),
        _ => "-".to_owned(),
    };
    redis::cmd("ZRANGE")
        .arg(store.keys.records(table))
        .arg(from)
        .arg("+")
        .arg("BYLEX")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(&mut store.conn())
        .await
        .map_err(StoreError::from_redis)
}

/// `FCALL rtsync_load <keys> [bytes] [hide|only] <page|ids>`.
fn load_call(
    keys: &[String],
    what: &Load,
    max_bytes: usize,
    mask: Option<Visible<'_>>,
) -> redis::Cmd {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("rtsync_load")
        .arg(keys.len())
        .arg(keys)
        .arg("bytes")
        .arg(max_bytes);
    if let Some(mask) = mask {
        let (mode, fields) = match mask {
            Visible::AllBut(hidden) => ("hide", hidden),
            Visible::Only(only) => ("only", only),
        };
        cmd.arg(mode).arg(fields.len()).arg(fields);
    }
    match what {
        Load::Page { after, limit } => {
            cmd.arg("page")
                .arg(after.as_deref().unwrap_or(""))
                .arg(limit);
        }
        Load::Ids(ids) => {
            cmd.arg("ids");
            for id in ids {
                cmd.arg(id);
            }
        }
    }
    cmd
}

/// One record to seed: its state in the app's database.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedRecord {
    pub record_id: String,
    pub version: u64,
    #[serde(default)]
    pub fields: serde_json::Map<String, Value>,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeedResult {
    pub written: u64,
    pub skipped: u64,
}

/// Checks seed records before anything is sent: ids, versions, and the
/// size bounds a commit is held to (each field's value within the event
/// size, so it can be sent to every subscriber; each record's state within
/// `max_record_bytes`).
pub fn validate_seed(
    records: &[SeedRecord],
    max_field_bytes: usize,
    max_record_bytes: usize,
) -> Result<(), ChangeError> {
    for (i, r) in records.iter().enumerate() {
        let place = format!("records[{i}]");
        let at = |e: ChangeError| e.at(&place);
        check_id("recordId", &r.record_id).map_err(at)?;
        if r.version == 0 || r.version > MAX_VERSION {
            return Err(at(ChangeError::Invalid(format!(
                "version must be 1..={MAX_VERSION}"
            ))));
        }
        let mut record_bytes = 0usize;
        for (field, value) in &r.fields {
            check_id("fields key", field).map_err(at)?;
            if value.is_null() {
                continue;
            }
            let len = json_len(value);
            if len > max_field_bytes {
                return Err(at(ChangeError::TooLarge(format!(
                    "field {field:?} would exceed the {max_field_bytes} bytes an event may carry (RTS_MAX_FRAME_BYTES)"
                ))));
            }
            record_bytes += field.len() + len;
        }
        if record_bytes > max_record_bytes {
            return Err(at(ChangeError::TooLarge(
                format!("record {:?} would exceed the {max_record_bytes} bytes a record may hold (RTS_MAX_RECORD_BYTES)", r.record_id),
            )));
        }
    }
    Ok(())
}

/// Writes the records whose version is newer than the one held; no event.
pub async fn seed(
    store: &Store,
    table: &str,
    records: &[SeedRecord],
) -> Result<SeedResult, StoreError> {
    let ids: Vec<&str> = records.iter().map(|r| r.record_id.as_str()).collect();
    let keys = store.keys.seed_keys(table, &ids);
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("rtsync_seed").arg(keys.len()).arg(&keys);
    for r in records {
        cmd.arg(&r.record_id)
            .arg(r.version)
            .arg(if r.deleted { "1" } else { "0" })
            .arg(r.fields.len());
        for (field, value) in &r.fields {
            let text =
                serde_json::to_string(value).map_err(|e| StoreError::Reply(e.to_string()))?;
            cmd.arg(field).arg(text);
        }
    }
    let reply: String = store.fcall(&cmd).await?;
    serde_json::from_str(&reply).map_err(|e| StoreError::Reply(format!("{e}: {reply}")))
}
