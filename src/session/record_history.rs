//! `record_history` (v1.3, docs/protocol.md 3.3): one record's changes,
//! newest first, from its history index (never a scan of the table's
//! stream), a page at a time: at most `limit` events and
//! `RTS_MAX_PAGE_BYTES` of them as the reader receives them (but always
//! one), with `next` (the `before` of the following page) while older ones
//! remain. Needs read access, not a subscription. The HTTP route
//! (`http::history`, API token) reads the same pages unmasked.
//!
//! v1.3 (2.2): under a row grant, a record outside the user's rows (judged
//! on its state now) has no history (`{events: []}`, as an unknown record);
//! one inside shows its whole history.
//!
//! Data flow: route → [`history`] (access, the reader's mask) → [`page`]
//! → `store::record_history::read` (one call per chunk) → decoded, masked,
//! cut by bytes → `{events, next?}`.

use serde::Serialize;

use super::reply::{forbidden, identity, read_mask, to_value, Reply};
use super::Session;
use crate::change::ChangeEvent;
use crate::grant::{masking, ReadMask};
use crate::protocol::messages::HistoryPageReq;
use crate::protocol::{Encoding, StreamId};
use crate::store::record_history::read;
use crate::store::tailer::decode_events;
use crate::store::{Store, StoreError};

/// A page of a record's history: `{events, next?}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    /// Newest first.
    pub events: Vec<ChangeEvent>,
    /// The `before` of the next page, while older changes remain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<StreamId>,
}

/// A page of the record's history, masked for the session's user.
pub async fn history(session: &mut Session, req: HistoryPageReq) -> Reply {
    if !identity(session)?.grants.can_read(&req.table_id) {
        return Err(forbidden("read", &req.table_id));
    }
    let user = identity(session)?;
    if let Some(rows) = user.grants.rows(&req.table_id) {
        let user_id = user.user_id.clone();
        if !super::records::in_rows(session, &req.table_id, &req.record_id, &rows, &user_id).await?
        {
            return to_value(&HistoryPage {
                events: Vec::new(),
                next: None,
            });
        }
    }
    let mask = read_mask(session, &req.table_id);
    let page = page(
        &session.app.store,
        &req,
        session.app.config.max_page_bytes,
        mask.as_deref(),
    )
    .await?;
    to_value(&page)
}

/// A page of `req`'s record history for a reader of `mask` (`None`: every
/// field): at most `req.limit` events and `max_bytes` of them as encoded
/// for the reader (MessagePack), the newest always. The bound counts the
/// masked events, so where a page ends never depends on fields hidden from
/// its reader; chunks are read until the masked events fill it (one call
/// unless masking shrinks them).
pub async fn page(
    store: &Store,
    req: &HistoryPageReq,
    max_bytes: usize,
    mask: Option<&ReadMask>,
) -> Result<HistoryPage, StoreError> {
    let mut events: Vec<ChangeEvent> = Vec::new();
    let mut used = 0;
    let mut before = req.before;
    loop {
        let left = req.limit.saturating_sub(events.len());
        let chunk = read(
            store,
            &req.table_id,
            &req.record_id,
            before,
            left,
            max_bytes,
        )
        .await?;
        for event in decode_events(&chunk.entries, &req.table_id) {
            let Some(event) = masking::owned_event(event, mask) else {
                continue;
            };
            let size = event.encoded(Encoding::MsgPack).len();
            if !events.is_empty() && used + size > max_bytes {
                let next = events.last().map(|e| e.id);
                return Ok(HistoryPage { events, next });
            }
            used += size;
            events.push(event);
        }
        match chunk.next {
            Some(next) if events.len() < req.limit => before = Some(next),
            next => return Ok(HistoryPage { events, next }),
        }
    }
}
