//! Undo and redo (docs/protocol.md 3.3): the user's top step read from its
//! stack (what records and fields it touched), then one `FCALL
//! rtsync_undo` (`lua/undo.lua`) that reverts it, given every record's key.
//!
//! Data flow: `session::undo` → [`top_step`] (a plain `LINDEX` of the
//! stack, only the step's JSON head decoded) → the grants checked on its
//! fields → [`revert`] with the step id it read; a `stale` answer (the top
//! changed meanwhile) sends the caller back to [`top_step`].

use serde::Deserialize;
use serde_json::Value;

use super::{Store, StoreError};

/// The head of a step (`lua/steps.lua`): its id and, per change, the
/// record and the fields it wrote.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct StepHead {
    pub id: String,
    #[serde(default)]
    pub recs: Vec<StepRecord>,
}

/// One record of a step.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct StepRecord {
    /// The record id.
    pub r: String,
    /// The field ids the step wrote on it.
    #[serde(default)]
    pub f: Vec<String>,
}

impl StepHead {
    /// The head of a stack element: its JSON before the first newline. An
    /// element that is not a step reads as a step with no id, which the
    /// function drops from the stack (answering `stale`).
    pub fn parse(raw: &[u8]) -> StepHead {
        let head = raw.split(|b| *b == b'\n').next().unwrap_or_default();
        serde_json::from_slice(head).unwrap_or_default()
    }

    /// The step's records, each once, in order of first appearance (the
    /// head has one item per change; the function folds them the same way).
    pub fn record_ids(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.recs
            .iter()
            .filter(|r| seen.insert(r.r.as_str()))
            .map(|r| r.r.clone())
            .collect()
    }
}

/// Which way a step is reverted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Undo,
    Redo,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Undo => "undo",
            Direction::Redo => "redo",
        }
    }
}

/// The top step of `user`'s undo (or redo) stack on `table`, if any.
pub async fn top_step(
    store: &Store,
    table: &str,
    user: &str,
    way: Direction,
) -> Result<Option<StepHead>, StoreError> {
    let [undo, redo] = store.keys.commit_undo_keys(table, user);
    let key = if way == Direction::Redo { redo } else { undo };
    let raw: Option<Vec<u8>> = redis::cmd("LINDEX")
        .arg(key)
        .arg(0)
        .query_async(&mut store.conn())
        .await
        .map_err(StoreError::from_redis)?;
    Ok(raw.map(|r| StepHead::parse(&r)))
}

/// What [`revert`] is asked: whose step, which one, and the function's
/// header (`lua/undo.lua`, ARGV 1) built by the caller.
pub struct RevertCall<'a> {
    pub table: &'a str,
    pub user: &'a str,
    pub way: Direction,
    /// The step read by [`top_step`] (`None`: the stack was empty).
    pub step: Option<&'a StepHead>,
    pub client_change_id: Option<&'a str>,
    pub header: &'a Value,
}

/// Reverts the step (one `FCALL rtsync_undo`); the function's answer, as
/// JSON (`status` `stale` when the top was not the step read).
pub async fn revert(store: &Store, call: &RevertCall<'_>) -> Result<Value, StoreError> {
    let records = call.step.map(StepHead::record_ids).unwrap_or_default();
    let keys = store.keys.undo_keys(
        call.table,
        call.user,
        call.way == Direction::Redo,
        &records,
        call.client_change_id,
    );
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("rtsync_undo").arg(keys.len()).arg(&keys);
    cmd.arg(call.header.to_string()).arg(store.retention_ms);
    let reply: String = store.fcall_durable(&cmd).await?;
    serde_json::from_str(&reply).map_err(|e| StoreError::Reply(format!("{e}: {reply}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_head_is_the_json_before_the_first_newline() {
        let head = StepHead::parse(
            b"{\"id\":\"1-0\",\"recs\":[{\"r\":\"r1\",\"f\":[\"f1\"]}]}\n\x93\xff\n",
        );
        assert_eq!(head.id, "1-0");
        assert_eq!(head.record_ids(), vec!["r1".to_owned()]);
        assert_eq!(head.recs[0].f, vec!["f1".to_owned()]);
    }

    #[test]
    fn a_record_changed_twice_in_a_step_is_named_once_in_order_of_first_change() {
        let head = StepHead::parse(
            br#"{"id":"1-0","recs":[{"r":"b","f":[]},{"r":"a","f":[]},{"r":"b","f":[]}]}"#,
        );
        assert_eq!(head.record_ids(), vec!["b".to_owned(), "a".to_owned()]);
    }

    #[test]
    fn an_element_that_is_not_a_step_reads_as_an_empty_one() {
        assert_eq!(StepHead::parse(b"garbage"), StepHead::default());
    }
}
