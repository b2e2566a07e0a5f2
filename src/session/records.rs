//! `load_records` (v1.1): a page of the table's record states with their
//! versions, or the listed records, for a client that converges by the
//! version rule (subscribe first, then load pages in any interleaving with
//! live events). Needs read access, not a subscription.

use super::reply::{forbidden, identity, read_mask, to_value, Reply};
use super::Session;
use crate::grant::masking;
use crate::protocol::messages::LoadRecordsReq;
use crate::store::records::{load as load_page, Load};

/// A page of records (the request's `tableId` is checked already).
pub async fn load(session: &mut Session, req: LoadRecordsReq) -> Reply {
    if !identity(session)?.grants.can_read(&req.table_id) {
        return Err(forbidden("read", &req.table_id));
    }
    let what = Load::new(req.record_ids, req.after, req.limit)?;
    // The function leaves the hidden fields out and cuts the page by the
    // bytes the reader receives; masked here again all the same.
    let mask = read_mask(session, &req.table_id);
    let mut page = load_page(
        &session.app.store,
        &req.table_id,
        &what,
        session.app.config.max_page_bytes,
        mask.as_deref().map(crate::grant::ReadMask::visible),
    )
    .await?;
    if let Some(mask) = &mask {
        for record in &mut page.records {
            masking::fields(&mut record.fields, mask);
        }
    }
    to_value(&page)
}
