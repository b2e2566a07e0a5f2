//! A change as it arrives, from any writer: a `record_change` frame, one
//! change of `sync_offline_changes`, one of `POST /api/v1/sync/batch-changes`
//! (docs/protocol.md sections 3 and 6). One shape for all of them: fields
//! the writer does not send take their defaults, and the session fills in
//! the user and the connection. Nothing here is checked yet; see
//! [`super::ValidChange`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An unchecked change. Serialized, it is the header `rtsync_commit` takes
/// (`lua/commit.lua`), without `changes` and `metadata`, which go as their
/// own arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRequest {
    /// `create`, `update`, `delete` for records; a short word for others.
    #[serde(rename = "type")]
    pub kind: String,
    /// What is changed; `record` unless the writer says otherwise.
    #[serde(default = "record")]
    pub entity_type: String,
    /// `recordId` in a `record_change`, `entityId` elsewhere.
    #[serde(alias = "recordId")]
    pub entity_id: String,
    /// The table (required unless the entity is a base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_id: Option<String>,
    /// The base: required for a base's own change, optional otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_id: Option<String>,
    /// Sent by the HTTP API's callers; a session's own user otherwise.
    #[serde(default)]
    pub user_id: String,
    /// The field changes: an array of `{fieldId, oldValue?, newValue?}`.
    #[serde(default, skip_serializing)]
    pub changes: Option<Value>,
    /// An object the writer attaches (`onConflict`, ...).
    #[serde(default, skip_serializing)]
    pub metadata: Option<Value>,
    /// The version the change was based on; absent for a blind write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The writer's id of the change: a resend is answered `duplicate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
    /// The connection that made it; never read from a writer.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

fn record() -> String {
    "record".to_owned()
}

impl ChangeRequest {
    /// A client's record change, made by `user_id` on connection `origin`:
    /// a client writes records only, as itself.
    pub fn by_client(mut self, user_id: &str, origin: &str) -> ChangeRequest {
        self.entity_type = record();
        self.user_id = user_id.to_owned();
        self.origin = Some(origin.to_owned());
        self
    }

    /// The table (or base) whose slot holds this change's keys.
    pub fn scope(&self) -> &str {
        let scope = if self.entity_type == "base" {
            &self.base_id
        } else {
            &self.table_id
        };
        scope.as_deref().unwrap_or_default()
    }
}
