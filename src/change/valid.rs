//! A change that passed every check, with the function's arguments encoded
//! once. The store's commit takes nothing else, so every writer (a live
//! edit, an offline batch, the HTTP batch) validates, once, here.
//!
//! Flow: [`ChangeRequest`] → [`ChangeRequest::validate`] (rules, ids, sizes;
//! `changes` becomes typed [`FieldChange`]s and the JSON texts the function
//! stores) → [`ValidChange`] → `store::commit`.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::error::Located;
use super::rules::{check_client_change_id, check_metadata, check_type, check_version};
use super::value::msgpack_len;
use super::Visible;
use super::{ChangeError, ChangeRequest, FieldChange};
use crate::change::ids::check_id;

/// Room for an event's own fields (id, type, ids, timestamp) on top of its
/// changes and metadata, when sizing it.
const EVENT_OVERHEAD: usize = 512;

/// The limits a change is checked against before anything is sent.
#[derive(Clone, Copy, Debug)]
pub struct ChangeLimits {
    /// Most field changes in one change (`RTS_MAX_CHANGES`).
    pub max_changes: usize,
    /// Largest event, in either wire encoding (`RTS_MAX_FRAME_BYTES`): an
    /// event that one subscriber could not be sent is refused for all.
    pub max_event_bytes: usize,
    /// Largest record state (`RTS_MAX_RECORD_BYTES`), checked by the
    /// function against the state it holds.
    pub max_record_bytes: usize,
    /// Most bytes of field values one answer carries (`current`,
    /// conflicts): `RTS_MAX_PAGE_BYTES`, shared out over a batch.
    pub answer_bytes: usize,
}

impl ChangeLimits {
    /// The limits of each change of a batch of `n`: the answers of the
    /// whole batch share one answer bound, so a batch reply is bounded
    /// whatever the records hold.
    pub fn for_batch(self, n: usize) -> ChangeLimits {
        ChangeLimits {
            answer_bytes: self.answer_bytes / n.max(1),
            ..self
        }
    }
}

/// The function's first argument: the change, the limits it is held to,
/// and (for a reader who may not read every field) the fields its answer
/// leaves out.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Header<'a> {
    #[serde(flatten)]
    req: &'a ChangeRequest,
    max_record_bytes: usize,
    answer_bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    hidden_fields: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    readable_fields: Option<&'a [String]>,
    /// (v1.3) The last two KEYS are the user's undo and redo stacks
    /// (`lua/commit.lua`): the change is recorded as an undo step.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    undo: bool,
    /// (v1.3) The undo group the change joins (`lua/steps.lua`).
    #[serde(skip_serializing_if = "Option::is_none")]
    undo_group: Option<&'a str>,
}

impl Header<'_> {
    fn encode(
        req: &ChangeRequest,
        limits: ChangeLimits,
        reader: Option<Visible<'_>>,
        undo: Option<&UndoStep>,
    ) -> Result<String, ChangeError> {
        serde_json::to_string(&Header {
            req,
            undo: undo.is_some(),
            undo_group: undo.and_then(|u| u.group.as_deref()),
            max_record_bytes: limits.max_record_bytes,
            answer_bytes: limits.answer_bytes,
            hidden_fields: match reader {
                Some(Visible::AllBut(hidden)) => Some(hidden),
                _ => None,
            },
            readable_fields: match reader {
                Some(Visible::Only(only)) => Some(only),
                _ => None,
            },
        })
        .map_err(|e| ChangeError::Invalid(e.to_string()))
    }
}

/// A checked change (see the module doc).
#[derive(Debug, Clone)]
pub struct ValidChange {
    /// The change, without its `changes` (see `fields`) and `metadata`.
    pub req: ChangeRequest,
    /// Its field changes, typed.
    pub fields: Vec<FieldChange>,
    /// The JSON text of the header, `changes` and `metadata` (the function's
    /// first three arguments; "" for none). `changes` is kept verbatim.
    pub header: String,
    /// `changes` as JSON text, verbatim.
    pub changes_json: String,
    /// `metadata` as JSON text.
    pub metadata_json: String,
    /// The JSON text of each field change's new value ("" for none): the
    /// bytes the record state keeps (see `lua/commit.lua`).
    pub values: Vec<String>,
    /// The limits it was validated against (its header carries them).
    limits: ChangeLimits,
    /// (v1.3) Recorded as an undo step of its user ([`ValidChange::undoable`]).
    pub undo: Option<UndoStep>,
    /// Who reads the answer, as [`ValidChange::answered_to`] named it.
    reader: Option<(bool, Vec<String>)>,
}

/// How a change is recorded on its user's undo stack (docs/protocol.md 3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UndoStep {
    /// The group it joins: the client's `metadata.undoGroup`, or one
    /// offline batch; `None` joins by time (500 ms).
    pub group: Option<String>,
}

/// Longest `metadata.undoGroup`, in bytes.
pub const MAX_UNDO_GROUP: usize = 128;

impl ValidChange {
    /// Names who reads the answer: the function leaves the fields `mask`
    /// hides out of `current` and the conflicts' values, and out of the
    /// answer's byte bound, so whether an answer is `truncated` never
    /// depends on fields its reader cannot see (docs/protocol.md 2.1).
    pub fn answered_to(&mut self, mask: Option<Visible<'_>>) -> Result<(), ChangeError> {
        self.reader = match mask {
            Some(Visible::AllBut(hidden)) => Some((false, hidden.to_vec())),
            Some(Visible::Only(only)) => Some((true, only.to_vec())),
            None => None,
        };
        if mask.is_some() {
            self.reencode()?;
        }
        Ok(())
    }

    /// v1.3 (2.2): the commit writes only when the record's version is
    /// still `version` (what a row-grant check read; 0 for no state),
    /// else answers `rejected` with reason `moved` and writes nothing.
    /// Call last, after [`ValidChange::answered_to`].
    pub fn require_version(&mut self, version: u64) {
        if let Some(open) = self.header.strip_suffix('}') {
            let sep = if open.ends_with('{') { "" } else { "," };
            self.header = format!("{open}{sep}\"requireVersion\":{version}}}");
        }
    }

    /// Records this change as an undo step of its user (v1.3): in the
    /// group `group` when given, else in `metadata.undoGroup` when the
    /// client named one (a string of 1..=128 bytes, else refused).
    pub fn undoable(&mut self, group: Option<String>) -> Result<(), ChangeError> {
        let group = match group {
            Some(g) => Some(g),
            None => match self.metadata().as_ref().and_then(|m| m.get("undoGroup")) {
                None | Some(Value::Null) => None,
                Some(Value::String(g)) if !g.is_empty() && g.len() <= MAX_UNDO_GROUP => {
                    Some(g.clone())
                }
                Some(_) => {
                    return Err(ChangeError::Invalid(format!(
                        "metadata.undoGroup must be a string of 1..={MAX_UNDO_GROUP} bytes"
                    )))
                }
            },
        };
        let first = self.undo.is_none();
        self.undo = Some(UndoStep { group });
        // Without a reader the undo fields are the header's last ones, so
        // they are appended to the header already encoded (the same bytes
        // as encoding it again, at a fraction of the cost of every edit).
        if first && self.reader.is_none() {
            if let Some(header) = with_undo(&self.header, self.undo.as_ref()) {
                self.header = header;
                return Ok(());
            }
        }
        self.reencode()
    }

    fn reencode(&mut self) -> Result<(), ChangeError> {
        let reader = self.reader.as_ref().map(|(only, fields)| {
            if *only {
                Visible::Only(fields)
            } else {
                Visible::AllBut(fields)
            }
        });
        self.header = Header::encode(&self.req, self.limits, reader, self.undo.as_ref())?;
        Ok(())
    }

    /// The `changes` as the writer gave them, without the writer's
    /// `oldValue`s, for an answer that repeats them: a writer's old value is
    /// never passed on (the stream entry holds the store's, see
    /// `lua/commit.lua`).
    pub fn changes(&self) -> Option<Value> {
        let mut changes: Value = serde_json::from_str(&self.changes_json).ok()?;
        if let Value::Array(items) = &mut changes {
            for item in items {
                if let Value::Object(entry) = item {
                    entry.remove("oldValue");
                }
            }
        }
        Some(changes)
    }

    /// The largest event it may make (`RTS_MAX_FRAME_BYTES`): the
    /// function leaves the old values out of a stream entry that would pass
    /// it (`lua/commit.lua`, maxEventBytes).
    pub fn max_event_bytes(&self) -> usize {
        self.limits.max_event_bytes
    }

    /// The `metadata` as stored.
    pub fn metadata(&self) -> Option<Value> {
        serde_json::from_str(&self.metadata_json).ok()
    }
}

/// `header` (a JSON object encoded without undo fields) with `"undo":true`
/// and the step's `"undoGroup"` appended, as [`Header`] orders them last;
/// `None` when `header` is not an object's text.
fn with_undo(header: &str, undo: Option<&UndoStep>) -> Option<String> {
    let open = header.strip_suffix('}')?;
    let mut out = String::with_capacity(header.len() + 32);
    out.push_str(open);
    out.push_str(if open.ends_with('{') {
        "\"undo\":true"
    } else {
        ",\"undo\":true"
    });
    if let Some(group) = undo.and_then(|u| u.group.as_deref()) {
        out.push_str(",\"undoGroup\":");
        out.push_str(&serde_json::to_string(group).ok()?);
    }
    out.push('}');
    Some(out)
}

/// JSON text of an optional value ("" for none).
fn json_or_empty(v: &Option<Value>) -> Result<String, ChangeError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(v) => serde_json::to_string(v).map_err(|e| ChangeError::Invalid(e.to_string())),
    }
}

impl ChangeRequest {
    /// Checks everything the function would refuse, and the sidecar's own
    /// limits, before anything is sent; encodes the function's arguments.
    pub fn validate(mut self, limits: ChangeLimits) -> Result<ValidChange, ChangeError> {
        self.check()?;
        let header = Header::encode(&self, limits, None, None)?;
        let changes_json = json_or_empty(&self.changes)?;
        let metadata_json = json_or_empty(&self.metadata)?;
        let changes = self.changes.take();
        let metadata = self.metadata.take();
        let size = event_size(
            &header,
            &changes_json,
            &metadata_json,
            (&changes, &metadata),
            limits.max_event_bytes,
        );
        let fields = FieldChange::list(changes, limits.max_changes)?;
        check_metadata(metadata.as_ref())?;
        if size > limits.max_event_bytes {
            return Err(ChangeError::TooLarge(format!(
                "this change's event would exceed the {} bytes every subscriber can be sent (RTS_MAX_FRAME_BYTES)",
                limits.max_event_bytes
            )));
        }
        let values = fields
            .iter()
            .map(|f| json_or_empty(&f.new_value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ValidChange {
            req: self,
            fields,
            header,
            changes_json,
            metadata_json,
            values,
            limits,
            undo: None,
            reader: None,
        })
    }

    fn check(&self) -> Result<(), ChangeError> {
        check_type(&self.entity_type, &self.kind)?;
        check_id("entityId", &self.entity_id)?;
        check_id("userId", &self.user_id)?;
        if self.entity_type == "base" {
            check_id("baseId", self.base_id.as_deref().unwrap_or_default())?;
        } else {
            check_id("tableId", self.table_id.as_deref().unwrap_or_default())?;
            if let Some(b) = &self.base_id {
                check_id("baseId", b)?;
            }
        }
        if let Some(v) = self.version {
            check_version(v)?;
        }
        if let Some(cc) = &self.client_change_id {
            check_client_change_id(cc)?;
        }
        Ok(())
    }
}

/// The largest a change's event could be in either wire encoding, as far
/// as it matters against `limit`.
fn event_size(
    header: &str,
    changes_json: &str,
    metadata_json: &str,
    (changes, metadata): (&Option<Value>, &Option<Value>),
    limit: usize,
) -> usize {
    let json_bytes = header.len() + changes_json.len() + metadata_json.len() + EVENT_OVERHEAD;
    // MessagePack is never more than 3× the JSON of the same value (a float:
    // 9 bytes against "1.0"); counting it is a second pass over the values,
    // so it is only made when that bound could pass the limit.
    if json_bytes.saturating_mul(3) <= limit {
        return json_bytes;
    }
    let msgpack_bytes =
        header.len() + msgpack_len(changes) + msgpack_len(metadata) + EVENT_OVERHEAD;
    json_bytes.max(msgpack_bytes)
}

/// Validates every change of a batch (offline sync, the HTTP batch) before
/// any is committed: one invalid change refuses the whole batch, naming its
/// index, and nothing is written.
///
/// Each change is validated with `limits` shared out over the batch (see
/// [`ChangeLimits::for_batch`]). One `clientChangeId` names one change: used
/// again in the batch for another change of the same user and table, it is
/// refused (the second would be answered `duplicate` with the first one's
/// event). `max_batch` is non-zero: a batch cap of 0 would refuse every
/// batch.
pub fn validate_batch<T, E>(
    items: Vec<T>,
    max_batch: std::num::NonZeroUsize,
    limits: ChangeLimits,
    mut validate: impl FnMut(T, ChangeLimits) -> Result<ValidChange, E>,
) -> Result<Vec<ValidChange>, E>
where
    E: From<ChangeError> + Located,
{
    if items.len() > max_batch.get() {
        return Err(E::from(ChangeError::TooLarge(format!(
            "at most {max_batch} changes per batch"
        ))));
    }
    let each = limits.for_batch(items.len());
    let mut named: HashMap<(String, String, String), (usize, String)> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let place = format!("changes[{i}]");
        let valid = validate(item, each).map_err(|e| e.at(&place))?;
        let req = &valid.req;
        if let Some(cc) = &req.client_change_id {
            let key = (req.user_id.clone(), req.scope().to_owned(), cc.clone());
            let entity = format!("{}:{}", req.entity_type, req.entity_id);
            match named.get(&key) {
                Some((first, e)) if *e != entity => {
                    return Err(E::from(ChangeError::Invalid(format!(
                        "clientChangeId {cc:?} already names changes[{first}] of another {}; one clientChangeId names one change",
                        req.entity_type
                    )))
                    .at(&place));
                }
                Some(_) => {}
                None => {
                    named.insert(key, (i, entity));
                }
            }
        }
        out.push(valid);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(group: Option<&str>) -> (ValidChange, Option<String>) {
        let req: ChangeRequest = serde_json::from_value(serde_json::json!({
            "type": "update", "entityType": "record", "entityId": "r1", "tableId": "t",
            "userId": "u", "changes": [{"fieldId": "f", "newValue": 1}],
            "metadata": {"undoGroup": "g\"1"}
        }))
        .unwrap();
        let limits = ChangeLimits {
            max_changes: 10,
            max_event_bytes: 1 << 20,
            max_record_bytes: 1 << 22,
            answer_bytes: 1 << 20,
        };
        (req.validate(limits).unwrap(), group.map(str::to_owned))
    }

    #[test]
    fn an_undoable_changes_header_is_the_one_encoding_it_again_would_give() {
        for group in [None, Some("batch-1")] {
            let (mut v, group) = valid(group);
            v.undoable(group).unwrap();
            let spliced = v.header.clone();
            v.reencode().unwrap();
            assert_eq!(spliced, v.header);
            assert!(spliced.contains("\"undo\":true"));
            assert!(spliced.contains("\"undoGroup\":"));
        }
    }
}
