//! A client's request, parsed and validated once: [`Request::parse`] turns
//! a decoded frame's event and `data` into one typed variant per client
//! event, carrying its checked payload (a record change comes out already
//! validated against the sidecar's limits, an offline batch with every
//! change validated and its table writable). Handlers take the payload
//! and cannot forget to check it.
//!
//! Data flow: `route` (after the authentication gate) → [`Request::parse`]
//! → `route::handle`, which gives each variant to its handler.
//!
//! Adding a request: a [`ClientEvent`] tag (its wire name, in `ALL`), its
//! variant and parse arm here, its handler, and its test. Nothing else
//! names events: the matches over [`ClientEvent`] and [`Request`] are
//! exhaustive, so the compiler lists every place a new event must reach.

use serde_json::Value;

use crate::auth::Identity;
use crate::change::{validate_batch, ChangeLimits, ChangeRequest, ValidChange};
use crate::protocol::messages::{
    parse, AuthenticateReq, ClientEvent, CursorReq, EditingReq, HistoryPageReq, LoadRecordsReq,
    RecordHistoryReq, RecoverReq, SelectionReq, SubscribeReq, TableReq, UndoReq, ViewportReq,
};
use crate::protocol::{ErrorCode, RequestError};

/// One client request with its parsed and validated payload.
#[derive(Debug)]
pub enum Request {
    Authenticate(AuthenticateReq),
    SubscribeToTable(SubscribeReq),
    UnsubscribeFromTable(TableReq),
    CursorPosition(CursorReq),
    Selection(SelectionReq),
    /// Boxed: a validated change is several times the other payloads.
    RecordChange(Box<ValidChange>),
    SyncOfflineChanges(Vec<ValidChange>),
    RecoverConnection(RecoverReq),
    Heartbeat(TableReq),
    LoadRecords(LoadRecordsReq),
    RecordHistory(HistoryPageReq),
    Editing(EditingReq),
    Viewport(ViewportReq),
    /// v1.3: undo the user's latest step on a table.
    Undo(UndoReq),
    /// v1.3: redo the user's latest undone step on a table.
    Redo(UndoReq),
}

/// Who sends a request, as far as checking its payload needs: a change
/// is validated as made by the caller on its connection, within the
/// sidecar's limits.
pub struct Caller<'a> {
    pub identity: Option<&'a Identity>,
    pub conn_id: &'a str,
    pub limits: ChangeLimits,
    /// Most changes in one offline batch (`RTS_MAX_BATCH`).
    pub max_batch: std::num::NonZeroUsize,
}

impl Caller<'_> {
    fn user(&self) -> Result<&Identity, RequestError> {
        self.identity
            .ok_or_else(|| RequestError::new(ErrorCode::Unauthenticated, "authenticate first"))
    }
}

impl Request {
    /// The request a frame makes: its payload parsed, then checked, each
    /// failure `bad_request` (or `payload_too_large`) naming the field.
    pub fn parse(
        event: ClientEvent,
        data: Value,
        caller: &Caller,
    ) -> Result<Request, RequestError> {
        let name = event.name();
        Ok(match event {
            ClientEvent::Authenticate => Request::Authenticate(parse(name, data)?),
            ClientEvent::SubscribeToTable => {
                let req: SubscribeReq = parse(name, data)?;
                req.validate()?;
                Request::SubscribeToTable(req)
            }
            ClientEvent::UnsubscribeFromTable => Request::UnsubscribeFromTable(table(name, data)?),
            ClientEvent::Heartbeat => Request::Heartbeat(table(name, data)?),
            ClientEvent::CursorPosition => {
                let req: CursorReq = parse(name, data)?;
                req.validate()?;
                Request::CursorPosition(req)
            }
            ClientEvent::Selection => {
                let req: SelectionReq = parse(name, data)?;
                req.validate()?;
                Request::Selection(req)
            }
            ClientEvent::RecoverConnection => {
                let req: RecoverReq = parse(name, data)?;
                req.validate()?;
                Request::RecoverConnection(req)
            }
            ClientEvent::LoadRecords => {
                let req: LoadRecordsReq = parse(name, data)?;
                req.validate()?;
                Request::LoadRecords(req)
            }
            ClientEvent::RecordHistory => {
                let req: RecordHistoryReq = parse(name, data)?;
                Request::RecordHistory(req.validate()?)
            }
            ClientEvent::Editing => {
                let req: EditingReq = parse(name, data)?;
                req.validate()?;
                Request::Editing(req)
            }
            ClientEvent::Viewport => {
                let req: ViewportReq = parse(name, data)?;
                req.validate()?;
                Request::Viewport(req)
            }
            ClientEvent::RecordChange => {
                Request::RecordChange(Box::new(change(name, data, caller)?))
            }
            ClientEvent::SyncOfflineChanges => {
                Request::SyncOfflineChanges(offline_batch(name, data, caller)?)
            }
            ClientEvent::Undo => Request::Undo(undo(name, data)?),
            ClientEvent::Redo => Request::Redo(undo(name, data)?),
        })
    }

    /// The event this request answers to.
    pub fn event(&self) -> ClientEvent {
        match self {
            Request::Authenticate(_) => ClientEvent::Authenticate,
            Request::SubscribeToTable(_) => ClientEvent::SubscribeToTable,
            Request::UnsubscribeFromTable(_) => ClientEvent::UnsubscribeFromTable,
            Request::CursorPosition(_) => ClientEvent::CursorPosition,
            Request::Selection(_) => ClientEvent::Selection,
            Request::RecordChange(_) => ClientEvent::RecordChange,
            Request::SyncOfflineChanges(_) => ClientEvent::SyncOfflineChanges,
            Request::RecoverConnection(_) => ClientEvent::RecoverConnection,
            Request::Heartbeat(_) => ClientEvent::Heartbeat,
            Request::LoadRecords(_) => ClientEvent::LoadRecords,
            Request::RecordHistory(_) => ClientEvent::RecordHistory,
            Request::Editing(_) => ClientEvent::Editing,
            Request::Viewport(_) => ClientEvent::Viewport,
            Request::Undo(_) => ClientEvent::Undo,
            Request::Redo(_) => ClientEvent::Redo,
        }
    }
}

fn table(name: &str, data: Value) -> Result<TableReq, RequestError> {
    let req: TableReq = parse(name, data)?;
    req.validate()?;
    Ok(req)
}

fn undo(name: &str, data: Value) -> Result<UndoReq, RequestError> {
    let req: UndoReq = parse(name, data)?;
    req.validate()?;
    Ok(req)
}

/// A record change, as the caller's on its connection, within the limits.
fn change(name: &str, data: Value, caller: &Caller) -> Result<ValidChange, RequestError> {
    let req: ChangeRequest = parse(name, data)?;
    let user = caller.user()?;
    let mut valid = req
        .by_client(&user.user_id, caller.conn_id)
        .validate(caller.limits)?;
    if valid.req.entity_type == "record" {
        valid.undoable(None)?;
    }
    Ok(valid)
}

/// An offline batch: an array of changes, each with its `clientChangeId`,
/// valid, and on a table the caller may write; the first failure refuses
/// the batch, naming its index (`changes[i]`).
fn offline_batch(
    name: &str,
    data: Value,
    caller: &Caller,
) -> Result<Vec<ValidChange>, RequestError> {
    let Value::Array(items) = data else {
        return Err(RequestError::bad_request(format!(
            "{name} takes an array of changes"
        )));
    };
    let user = caller.user()?;
    validate_batch(items, caller.max_batch, caller.limits, |item, limits| {
        let change: ChangeRequest = parse("offline change", item)?;
        if change.client_change_id.is_none() {
            return Err(RequestError::bad_request(
                "an offline change needs its clientChangeId",
            ));
        }
        let valid = change
            .by_client(&user.user_id, caller.conn_id)
            .validate(limits)?;
        let table = valid.req.scope();
        if !user.grants.can_write(table) {
            return Err(super::reply::forbidden("write", table));
        }
        Ok(valid)
    })
    .and_then(one_undo_step)
}

/// One offline batch is one undo step (docs/protocol.md 3.3): its group is
/// named by the batch's first clientChangeId.
fn one_undo_step(mut batch: Vec<ValidChange>) -> Result<Vec<ValidChange>, RequestError> {
    let group = batch
        .first()
        .and_then(|c| c.req.client_change_id.as_deref())
        .map(|cc| format!("offline:{cc}"));
    for valid in batch.iter_mut().filter(|v| v.req.entity_type == "record") {
        valid.undoable(group.clone())?;
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::{BaseGrants, Grants};
    use serde_json::json;

    fn identity() -> Identity {
        let claim = json!({"t1": "rw", "ro": "r"});
        Identity {
            user_id: "u1".into(),
            user_name: "U".into(),
            avatar_url: None,
            grants: Grants::from_claim(claim.as_object().unwrap()).unwrap(),
            bases: BaseGrants::default(),
            expires_at: None,
        }
    }

    fn limits() -> ChangeLimits {
        ChangeLimits {
            max_changes: 100,
            max_event_bytes: 1 << 20,
            max_record_bytes: 1 << 20,
            answer_bytes: 1 << 20,
        }
    }

    fn parse_as(event: ClientEvent, data: Value) -> Result<Request, RequestError> {
        let user = identity();
        let caller = Caller {
            identity: Some(&user),
            conn_id: "c1",
            limits: limits(),
            max_batch: std::num::NonZeroUsize::MIN.saturating_add(9),
        };
        Request::parse(event, data, &caller)
    }

    fn refusal(event: ClientEvent, data: Value) -> RequestError {
        match parse_as(event, data) {
            Ok(r) => panic!("{:?} parsed: {r:?}", event),
            Err(e) => e,
        }
    }

    fn assert_bad_request_naming(event: ClientEvent, data: Value, field: &str) {
        let e = refusal(event, data);
        assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
        assert!(
            e.message.contains(field),
            "{:?} does not name {field}",
            e.message
        );
    }

    fn change() -> Value {
        json!({"type": "update", "entityId": "r1", "tableId": "t1",
            "changes": [{"fieldId": "f1", "newValue": 1}], "clientChangeId": "cc1"})
    }

    #[test]
    fn every_parsed_request_answers_to_its_event() {
        let valid = [
            (ClientEvent::Authenticate, json!({"token": "x"})),
            (ClientEvent::SubscribeToTable, json!({"tableId": "t1"})),
            (ClientEvent::UnsubscribeFromTable, json!({"tableId": "t1"})),
            (
                ClientEvent::CursorPosition,
                json!({"tableId": "t1", "cursor": {"recordId": "r", "fieldId": "f"}}),
            ),
            (
                ClientEvent::Selection,
                json!({"tableId": "t1", "selection": {"startRecordId": "a",
                    "startFieldId": "b", "endRecordId": "c", "endFieldId": "d"}}),
            ),
            (ClientEvent::RecordChange, change()),
            (ClientEvent::SyncOfflineChanges, json!([change()])),
            (
                ClientEvent::RecoverConnection,
                json!({"tableId": "t1", "lastEventId": "1-0"}),
            ),
            (ClientEvent::Heartbeat, json!({"tableId": "t1"})),
            (ClientEvent::LoadRecords, json!({"tableId": "t1"})),
            (
                ClientEvent::RecordHistory,
                json!({"tableId": "t1", "recordId": "r1"}),
            ),
            (
                ClientEvent::Editing,
                json!({"tableId": "t1", "recordId": "r", "fieldId": "f", "state": "start"}),
            ),
            (
                ClientEvent::Viewport,
                json!({"tableId": "t1", "firstRecordId": "r1", "lastRecordId": "r9"}),
            ),
            (ClientEvent::Undo, json!({"tableId": "t1"})),
            (
                ClientEvent::Redo,
                json!({"tableId": "t1", "clientChangeId": "u1"}),
            ),
        ];
        assert_eq!(valid.len(), ClientEvent::ALL.len());
        for (event, data) in valid {
            match parse_as(event, data) {
                Ok(request) => assert_eq!(request.event(), event),
                Err(e) => panic!("{} refused: {e:?}", event.name()),
            }
        }
    }

    #[test]
    fn a_payload_of_the_wrong_shape_is_a_bad_request_naming_the_event() {
        for event in ClientEvent::ALL {
            let e = refusal(event, json!("not an object"));
            assert_eq!(e.code, ErrorCode::BadRequest, "{}", event.name());
            assert!(e.message.contains(event.name()), "{:?}", e.message);
        }
    }

    #[test]
    fn a_subscribe_with_a_bad_table_id_names_table_id() {
        assert_bad_request_naming(
            ClientEvent::SubscribeToTable,
            json!({"tableId": ""}),
            "tableId",
        );
    }

    #[test]
    fn a_subscribe_with_a_bad_last_event_id_names_last_event_id() {
        assert_bad_request_naming(
            ClientEvent::SubscribeToTable,
            json!({"tableId": "t1", "lastEventId": "nope"}),
            "lastEventId",
        );
    }

    #[test]
    fn an_unsubscribe_with_a_bad_table_id_names_table_id() {
        assert_bad_request_naming(
            ClientEvent::UnsubscribeFromTable,
            json!({"tableId": ""}),
            "tableId",
        );
    }

    #[test]
    fn a_heartbeat_with_a_bad_table_id_names_table_id() {
        assert_bad_request_naming(ClientEvent::Heartbeat, json!({"tableId": ""}), "tableId");
    }

    #[test]
    fn a_cursor_with_a_bad_record_id_names_the_cursor_field() {
        assert_bad_request_naming(
            ClientEvent::CursorPosition,
            json!({"tableId": "t1", "cursor": {"recordId": "", "fieldId": "f"}}),
            "cursor.recordId",
        );
    }

    #[test]
    fn a_cursor_with_a_non_numeric_offset_names_the_offsets() {
        assert_bad_request_naming(
            ClientEvent::CursorPosition,
            json!({"tableId": "t1", "cursor": {"recordId": "r", "fieldId": "f", "x": "1"}}),
            "cursor.x",
        );
    }

    #[test]
    fn a_selection_with_a_bad_end_names_the_selection_field() {
        assert_bad_request_naming(
            ClientEvent::Selection,
            json!({"tableId": "t1", "selection": {"startRecordId": "a",
                "startFieldId": "b", "endRecordId": "", "endFieldId": "d"}}),
            "selection.endRecordId",
        );
    }

    #[test]
    fn a_recovery_with_a_base_position_but_no_base_names_base_id() {
        assert_bad_request_naming(
            ClientEvent::RecoverConnection,
            json!({"tableId": "t1", "baseLastEventId": "1-0"}),
            "baseId",
        );
    }

    #[test]
    fn a_load_with_a_bad_table_id_names_table_id() {
        assert_bad_request_naming(ClientEvent::LoadRecords, json!({"tableId": ""}), "tableId");
    }

    #[test]
    fn a_history_request_with_a_bad_record_id_names_record_id() {
        assert_bad_request_naming(
            ClientEvent::RecordHistory,
            json!({"tableId": "t1", "recordId": ""}),
            "recordId",
        );
    }

    #[test]
    fn a_history_request_with_a_bad_before_names_before() {
        assert_bad_request_naming(
            ClientEvent::RecordHistory,
            json!({"tableId": "t1", "recordId": "r", "before": "x"}),
            "before",
        );
    }

    #[test]
    fn a_history_request_past_the_page_limit_names_limit() {
        assert_bad_request_naming(
            ClientEvent::RecordHistory,
            json!({"tableId": "t1", "recordId": "r", "limit": 1001}),
            "limit",
        );
    }

    #[test]
    fn an_editing_with_a_bad_field_id_names_field_id() {
        assert_bad_request_naming(
            ClientEvent::Editing,
            json!({"tableId": "t1", "recordId": "r", "fieldId": "", "state": "start"}),
            "fieldId",
        );
    }

    #[test]
    fn an_editing_with_an_unknown_state_is_a_bad_request() {
        assert_bad_request_naming(
            ClientEvent::Editing,
            json!({"tableId": "t1", "recordId": "r", "fieldId": "f", "state": "typing"}),
            "editing",
        );
    }

    #[test]
    fn a_viewport_listing_more_than_500_records_is_refused() {
        let ids: Vec<String> = (0..501).map(|i| format!("r{i}")).collect();
        assert_bad_request_naming(
            ClientEvent::Viewport,
            json!({"tableId": "t1", "recordIds": ids}),
            "recordIds",
        );
    }

    #[test]
    fn a_viewport_needs_ids_or_a_whole_range() {
        assert_bad_request_naming(
            ClientEvent::Viewport,
            json!({"tableId": "t1", "firstRecordId": "r1"}),
            "lastRecordId",
        );
    }

    #[test]
    fn a_record_change_with_a_bad_entity_id_names_entity_id() {
        let mut c = change();
        c["entityId"] = json!("");
        assert_bad_request_naming(ClientEvent::RecordChange, c, "entityId");
    }

    #[test]
    fn a_record_change_is_validated_as_the_callers_on_its_connection() {
        match parse_as(ClientEvent::RecordChange, change()) {
            Ok(Request::RecordChange(valid)) => {
                assert_eq!(valid.req.user_id, "u1");
                assert_eq!(valid.req.origin.as_deref(), Some("c1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_offline_batch_that_is_not_an_array_names_the_event() {
        assert_bad_request_naming(
            ClientEvent::SyncOfflineChanges,
            json!({}),
            ClientEvent::SyncOfflineChanges.name(),
        );
    }

    #[test]
    fn an_offline_change_without_its_client_change_id_names_its_index() {
        let mut c = change();
        c["clientChangeId"] = Value::Null;
        assert_bad_request_naming(
            ClientEvent::SyncOfflineChanges,
            json!([change(), c]),
            "changes[1]: an offline change needs its clientChangeId",
        );
    }

    #[test]
    fn an_offline_change_to_a_table_not_writable_is_forbidden_at_its_index() {
        let mut c = change();
        c["tableId"] = json!("ro");
        let e = refusal(ClientEvent::SyncOfflineChanges, json!([c]));
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert_eq!(e.message, "changes[0]: no write access to table ro");
    }

    #[test]
    fn an_unknown_event_name_is_no_client_event() {
        assert_eq!(ClientEvent::parse("subscribe"), None);
        assert_eq!(
            ClientEvent::parse(ClientEvent::Heartbeat.name()),
            Some(ClientEvent::Heartbeat)
        );
    }
}
