//! Typed payloads of client requests (docs/protocol.md section 3) and of the
//! small server events. Requests are parsed from the frame's `data` value and
//! validated here, so handlers only see well-formed input.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RequestError;
use crate::change::ids::check_id;

/// The events a client may send (docs/protocol.md section 3): parsed once
/// from a frame's name; the name is the dispatch key, the metric label and
/// the `event` of an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    Authenticate,
    SubscribeToTable,
    UnsubscribeFromTable,
    CursorPosition,
    Selection,
    RecordChange,
    SyncOfflineChanges,
    RecoverConnection,
    Heartbeat,
    LoadRecords,
    RecordHistory,
    Editing,
    Viewport,
    Undo,
    Redo,
}

impl ClientEvent {
    pub const ALL: [ClientEvent; 15] = [
        ClientEvent::Authenticate,
        ClientEvent::SubscribeToTable,
        ClientEvent::UnsubscribeFromTable,
        ClientEvent::CursorPosition,
        ClientEvent::Selection,
        ClientEvent::RecordChange,
        ClientEvent::SyncOfflineChanges,
        ClientEvent::RecoverConnection,
        ClientEvent::Heartbeat,
        ClientEvent::LoadRecords,
        ClientEvent::RecordHistory,
        ClientEvent::Editing,
        ClientEvent::Viewport,
        ClientEvent::Undo,
        ClientEvent::Redo,
    ];

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ClientEvent::Authenticate => "authenticate",
            ClientEvent::SubscribeToTable => "subscribe_to_table",
            ClientEvent::UnsubscribeFromTable => "unsubscribe_from_table",
            ClientEvent::CursorPosition => "cursor_position",
            ClientEvent::Selection => "selection",
            ClientEvent::RecordChange => "record_change",
            ClientEvent::SyncOfflineChanges => "sync_offline_changes",
            ClientEvent::RecoverConnection => "recover_connection",
            ClientEvent::Heartbeat => "heartbeat",
            ClientEvent::LoadRecords => "load_records",
            ClientEvent::RecordHistory => "record_history",
            ClientEvent::Editing => "editing",
            ClientEvent::Viewport => "viewport",
            ClientEvent::Undo => "undo",
            ClientEvent::Redo => "redo",
        }
    }

    /// The event a frame names, if it is one.
    pub fn parse(name: &str) -> Option<ClientEvent> {
        ClientEvent::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Parses `data` into a request type, answering `bad_request` on mismatch.
pub fn parse<T: for<'de> Deserialize<'de>>(event: &str, data: Value) -> Result<T, RequestError> {
    serde_json::from_value(data)
        .map_err(|e| RequestError::bad_request(format!("invalid {event} payload: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticateReq {
    pub token: Option<String>,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub avatar_url: Option<String>,
    /// Development mode only: the grants to take instead of every table.
    pub tables: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Authenticated<'a> {
    pub user_id: &'a str,
    pub connection_id: &'a str,
    pub server_time: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeReq {
    pub table_id: String,
    pub view_id: Option<String>,
    pub base_id: Option<String>,
    /// v1.1: subscribe and recover in one request.
    pub last_event_id: Option<String>,
    /// v1.2: the last event received from the base's stream (3.2).
    pub base_last_event_id: Option<String>,
    /// v1.3: which cursor and editing relays the connection gets (3.4).
    #[serde(default)]
    pub relay: RelayScope,
}

/// v1.3 (docs/protocol.md 3.4): `all` relays every cursor and editing
/// indicator of the table; `viewport` only those on records inside the
/// connection's last `viewport` (all of them until it sends one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayScope {
    #[default]
    All,
    Viewport,
}

impl SubscribeReq {
    pub fn validate(&self) -> Result<(), RequestError> {
        check_id("tableId", &self.table_id)?;
        if let Some(v) = &self.view_id {
            check_id("viewId", v)?;
        }
        if let Some(b) = &self.base_id {
            check_id("baseId", b)?;
        }
        check_position(self.last_event_id.as_deref())?;
        if self.base_last_event_id.is_some() && self.base_id.is_none() {
            return Err(RequestError::bad_request(
                "baseLastEventId needs the baseId it belongs to",
            ));
        }
        check_position(self.base_last_event_id.as_deref())
    }
}

fn check_position(id: Option<&str>) -> Result<(), RequestError> {
    match id {
        Some(id) if !is_stream_id(id) => Err(RequestError::bad_request(
            "lastEventId must be a stream id like \"1732400000000-0\"",
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableReq {
    pub table_id: String,
}

impl TableReq {
    pub fn validate(&self) -> Result<(), RequestError> {
        check_id("tableId", &self.table_id)?;
        Ok(())
    }
}

/// `undo` / `redo` (v1.3, docs/protocol.md 3.3): the table, and a
/// clientChangeId that makes the request idempotent like a change's.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UndoReq {
    pub table_id: String,
    pub client_change_id: Option<String>,
}

impl UndoReq {
    pub fn validate(&self) -> Result<(), RequestError> {
        check_id("tableId", &self.table_id)?;
        if let Some(cc) = &self.client_change_id {
            crate::change::rules::check_client_change_id(cc)
                .map_err(|e| RequestError::bad_request(e.to_string()))?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableAck<'a> {
    pub table_id: &'a str,
}

#[derive(Debug, Serialize)]
pub struct Timestamp {
    pub timestamp: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    pub record_id: String,
    pub field_id: String,
    /// Pixel offsets, passed through as sent (numbers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CursorReq {
    pub table_id: String,
    pub cursor: Cursor,
}

impl CursorReq {
    pub fn validate(&self) -> Result<(), RequestError> {
        check_id("tableId", &self.table_id)?;
        check_id("cursor.recordId", &self.cursor.record_id)?;
        check_id("cursor.fieldId", &self.cursor.field_id)?;
        for v in [&self.cursor.x, &self.cursor.y].into_iter().flatten() {
            if !v.is_number() {
                return Err(RequestError::bad_request(
                    "cursor.x and cursor.y must be numbers",
                ));
            }
        }
        Ok(())
    }
}

/// `editing` (v1.3): a user starts or stops editing one cell.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EditingReq {
    pub table_id: String,
    pub record_id: String,
    pub field_id: String,
    pub state: EditingState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EditingState {
    Start,
    Stop,
}

impl EditingReq {
    pub fn validate(&self) -> Result<(), RequestError> {
        check_id("tableId", &self.table_id)?;
        check_id("recordId", &self.record_id)?;
        check_id("fieldId", &self.field_id)?;
        Ok(())
    }
}

/// Most record ids one `viewport` may list.
pub const MAX_VIEWPORT_RECORDS: usize = 500;

/// Most bytes of ids one `viewport` may list (their sum). A viewport is
/// kept per connection in the hub, per user in Redis presence, sent in
/// every `table_users` and relayed to every subscriber up to 20 times a
/// second: 500 ids of 128 bytes (64 KiB) would make each of those 64 KiB
/// per user. 16 KiB holds 500 ids of 32 bytes (or 455 UUIDs); a larger
/// view sends a range.
pub const MAX_VIEWPORT_ID_BYTES: usize = 16 * 1024;

/// `viewport` (v1.3): the rows a user sees, as listed ids or as an
/// inclusive range in record-id order (the order `load_records` pages in).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewportReq {
    #[serde(skip_serializing)]
    pub table_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_ids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_record_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_record_id: Option<String>,
}

impl ViewportReq {
    pub fn validate(&self) -> Result<(), RequestError> {
        check_id("tableId", &self.table_id)?;
        if let Some(v) = &self.view_id {
            check_id("viewId", v)?;
        }
        let range = (&self.first_record_id, &self.last_record_id);
        match (&self.record_ids, range) {
            (Some(ids), (None, None)) => {
                if ids.is_empty() || ids.len() > MAX_VIEWPORT_RECORDS {
                    return Err(RequestError::bad_request(format!(
                        "recordIds holds 1..={MAX_VIEWPORT_RECORDS} ids"
                    )));
                }
                for id in ids {
                    check_id("recordIds[]", id)?;
                }
                if ids.iter().map(String::len).sum::<usize>() > MAX_VIEWPORT_ID_BYTES {
                    return Err(RequestError::bad_request(format!(
                        "recordIds holds at most {MAX_VIEWPORT_ID_BYTES} bytes of ids; send a range"
                    )));
                }
                Ok(())
            }
            (None, (Some(first), Some(last))) => {
                check_id("firstRecordId", first)?;
                check_id("lastRecordId", last)?;
                if first > last {
                    return Err(RequestError::bad_request(
                        "firstRecordId must not come after lastRecordId",
                    ));
                }
                Ok(())
            }
            _ => Err(RequestError::bad_request(
                "viewport takes recordIds or both firstRecordId and lastRecordId",
            )),
        }
    }

    /// The rows it names, as the relay filter tests them.
    pub fn filter(&self) -> ViewportFilter {
        match (
            &self.record_ids,
            &self.first_record_id,
            &self.last_record_id,
        ) {
            (Some(ids), _, _) => ViewportFilter::Ids(ids.iter().cloned().collect()),
            (None, Some(first), Some(last)) => ViewportFilter::Range(first.clone(), last.clone()),
            _ => ViewportFilter::Everything,
        }
    }
}

/// The rows of a connection's viewport, for relay filtering (3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewportFilter {
    Ids(std::collections::BTreeSet<String>),
    /// Inclusive, in record-id (byte) order.
    Range(String, String),
    Everything,
}

impl ViewportFilter {
    /// Whether the viewport holds `record`.
    pub fn holds(&self, record: &str) -> bool {
        match self {
            ViewportFilter::Ids(ids) => ids.contains(record),
            ViewportFilter::Range(first, last) => {
                first.as_str() <= record && record <= last.as_str()
            }
            ViewportFilter::Everything => true,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    pub start_record_id: String,
    pub start_field_id: String,
    pub end_record_id: String,
    pub end_field_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectionReq {
    pub table_id: String,
    pub selection: Selection,
}

impl SelectionReq {
    pub fn validate(&self) -> Result<(), RequestError> {
        check_id("tableId", &self.table_id)?;
        let s = &self.selection;
        check_id("selection.startRecordId", &s.start_record_id)?;
        check_id("selection.startFieldId", &s.start_field_id)?;
        check_id("selection.endRecordId", &s.end_record_id)?;
        check_id("selection.endFieldId", &s.end_field_id)?;
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverReq {
    pub table_id: String,
    pub view_id: Option<String>,
    pub base_id: Option<String>,
    pub last_event_id: Option<String>,
    pub base_last_event_id: Option<String>,
    /// Accepted for compatibility; positions are stream ids.
    pub last_version: Option<u64>,
}

impl RecoverReq {
    pub fn validate(&self) -> Result<(), RequestError> {
        self.as_subscribe().validate()
    }

    /// The same request as a subscribe (recovery subscribes by itself).
    pub fn as_subscribe(&self) -> SubscribeReq {
        SubscribeReq {
            table_id: self.table_id.clone(),
            view_id: self.view_id.clone(),
            base_id: self.base_id.clone(),
            last_event_id: self.last_event_id.clone(),
            base_last_event_id: self.base_last_event_id.clone(),
            relay: RelayScope::All,
        }
    }
}

/// `load_records` (v1.1): a page of records, or the listed ones. Only
/// `tableId` is checked here: the page's arguments are checked once read
/// access is (`store::records::Load::new`), so a reader without access
/// learns nothing about them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadRecordsReq {
    pub table_id: String,
    pub record_ids: Option<Vec<String>>,
    pub after: Option<String>,
    pub limit: Option<usize>,
    /// v1.3 (3.5): only the records in this view (an unknown view, or one
    /// without a filter, is the whole table).
    #[serde(default)]
    pub view_id: Option<String>,
}

impl LoadRecordsReq {
    pub fn validate(&self) -> Result<(), RequestError> {
        check_id("tableId", &self.table_id)?;
        if let Some(v) = &self.view_id {
            check_id("viewId", v)?;
        }
        Ok(())
    }
}

/// Most events in one `record_history` page.
pub const MAX_HISTORY_PAGE: usize = 1000;
/// Events in a `record_history` page when the client does not say.
pub const DEFAULT_HISTORY_PAGE: usize = 100;

/// `record_history` (v1.3): a page of one record's changes, newest first,
/// older than `before` (the previous page's `next`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordHistoryReq {
    pub table_id: String,
    pub record_id: String,
    pub before: Option<String>,
    pub limit: Option<usize>,
}

/// A checked `record_history` request.
#[derive(Debug, Clone)]
pub struct HistoryPageReq {
    pub table_id: String,
    pub record_id: String,
    pub before: Option<super::StreamId>,
    pub limit: usize,
}

impl RecordHistoryReq {
    /// The ids, `before` (a stream id) and `limit` (1..=1000, default 100)
    /// checked; the same rules on every endpoint.
    pub fn validate(self) -> Result<HistoryPageReq, RequestError> {
        check_id("tableId", &self.table_id)?;
        check_id("recordId", &self.record_id)?;
        let before = match self.before.as_deref() {
            None | Some("") => None,
            Some(b) => Some(super::StreamId::parse(b).ok_or_else(|| {
                RequestError::bad_request("before must be a stream id (<ms>-<seq>)")
            })?),
        };
        let limit = self.limit.unwrap_or(DEFAULT_HISTORY_PAGE);
        if limit == 0 || limit > MAX_HISTORY_PAGE {
            return Err(RequestError::bad_request(format!(
                "limit must be 1..={MAX_HISTORY_PAGE}"
            )));
        }
        Ok(HistoryPageReq {
            table_id: self.table_id,
            record_id: self.record_id,
            before,
            limit,
        })
    }
}

/// `<ms>-<seq>` with both parts decimal.
pub fn is_stream_id(id: &str) -> bool {
    super::StreamId::parse(id).is_some()
}

#[derive(Debug, Default, Serialize)]
pub struct OfflineCounts {
    pub applied: usize,
    pub merged: usize,
    pub rejected: usize,
    pub duplicates: usize,
}

#[cfg(test)]
mod viewport_tests {
    use super::*;
    use serde_json::json;

    fn viewport(data: Value) -> ViewportReq {
        serde_json::from_value(data).unwrap()
    }

    #[test]
    fn a_range_viewport_holds_the_records_between_its_ends_in_id_order() {
        let v = viewport(json!({"tableId": "t", "firstRecordId": "r10", "lastRecordId": "r19"}));
        assert!(v.validate().is_ok());
        let f = v.filter();
        assert!(f.holds("r10") && f.holds("r15") && f.holds("r19"));
        assert!(!f.holds("r09") && !f.holds("r2") && !f.holds("r20"));
    }

    #[test]
    fn a_listed_viewport_holds_only_its_ids() {
        let f = viewport(json!({"tableId": "t", "recordIds": ["a", "c"]})).filter();
        assert!(f.holds("a") && f.holds("c") && !f.holds("b"));
    }

    #[test]
    fn a_viewport_with_both_ids_and_a_range_is_refused() {
        let v = viewport(json!({"tableId": "t", "recordIds": ["a"],
            "firstRecordId": "a", "lastRecordId": "b"}));
        assert!(v.validate().is_err());
    }

    #[test]
    fn a_range_whose_first_comes_after_its_last_is_refused() {
        let v = viewport(json!({"tableId": "t", "firstRecordId": "b", "lastRecordId": "a"}));
        assert!(v.validate().is_err());
    }

    #[test]
    fn a_viewport_is_relayed_without_its_table_id() {
        let v = viewport(json!({"tableId": "t", "viewId": "g", "recordIds": ["a"]}));
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            json!({"viewId": "g", "recordIds": ["a"]})
        );
    }
}
