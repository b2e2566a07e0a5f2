//! `load_records` (v1.1): a page of the table's record states with their
//! versions, or the listed records, for a client that converges by the
//! version rule (subscribe first, then load pages in any interleaving with
//! live events). Needs read access, not a subscription.
//!
//! v1.3 (2.2): under a row grant the page holds only the records that match
//! the grant's filter, evaluated on the stored values of every field (the
//! records are read unmasked, filtered, then masked, so a hidden field can
//! still decide a row). A page read that finds no visible record reads the
//! next one, at most [`MAX_SCANS`] per request (see [`filtered_page`]).
//!
//! v1.3 (3.5): `load_records {viewId}` holds only the view's records, the
//! same way (the view's filter and the row grant must both match); the
//! view's filter comes from `App::views` (`Views::load`: kept, or read
//! from its key once). An unknown view, or one without a filter, is the
//! whole table.

use std::sync::Arc;

use super::reply::{forbidden, identity, read_mask, to_value, Reply};
use super::Session;
use crate::filter::Filter;
use crate::grant::masking;
use crate::protocol::messages::LoadRecordsReq;
use crate::store::records::{load as load_page, Load, RecordPage};
use crate::store::{Store, StoreError};

/// A page of records (the request's `tableId` is checked already).
pub async fn load(session: &mut Session, req: LoadRecordsReq) -> Reply {
    if !identity(session)?.grants.can_read(&req.table_id) {
        return Err(forbidden("read", &req.table_id));
    }
    let what = Load::new(req.record_ids, req.after, req.limit)?;
    // The function leaves the hidden fields out and cuts the page by the
    // bytes the reader receives; masked here again all the same.
    let mask = read_mask(session, &req.table_id);
    let view = match &req.view_id {
        Some(v) => {
            let app = &session.app;
            app.views.load(&app.store, &req.table_id, v).await?
        }
        None => None,
    };
    let user = identity(session)?;
    let filters: Vec<Arc<Filter>> = user
        .grants
        .rows(&req.table_id)
        .into_iter()
        .chain(view)
        .collect();
    let mut page = match filters.is_empty() {
        false => {
            let user = user.user_id.clone();
            let (store, max) = (&session.app.store, session.app.config.max_page_bytes);
            filtered_page(store, max, &req.table_id, what, &filters, &user).await?
        }
        true => {
            load_page(
                &session.app.store,
                &req.table_id,
                &what,
                session.app.config.max_page_bytes,
                mask.as_deref().map(crate::grant::ReadMask::visible),
            )
            .await?
        }
    };
    if let Some(mask) = &mask {
        for record in &mut page.records {
            masking::fields(&mut record.fields, mask);
        }
    }
    to_value(&page)
}

/// Underlying page reads one `load_records` under a row grant may make
/// while they find no visible record.
pub const MAX_SCANS: usize = 16;

/// A page of the records every one of `filters` (the row grant, the view)
/// shows `user`. Listed ids: those that match.
/// A page: underlying pages are read until one holds a visible record (at
/// most [`MAX_SCANS`]); its `next` is the last visible record's id when the
/// page's last record is hidden, so a cursor never names a hidden record,
/// except when [`MAX_SCANS`] reads in a row found none (the cursor must
/// then move past them, and names the last record read).
pub async fn filtered_page(
    store: &Store,
    max_page_bytes: usize,
    table: &str,
    what: Load,
    filters: &[Arc<Filter>],
    user: &str,
) -> Result<RecordPage, StoreError> {
    let read =
        |what: Load| async move { load_page(store, table, &what, max_page_bytes, None).await };
    let keep = |page: &mut RecordPage| {
        let before = page.records.len();
        page.records
            .retain(|r| filters.iter().all(|f| f.matches(&r.fields, user)));
        let withheld = (before - page.records.len()) as u64;
        crate::metrics::rows_filtered(before as u64, withheld);
    };
    let Load::Page { mut after, limit } = what else {
        let mut page = read(what).await?;
        keep(&mut page);
        return Ok(page);
    };
    let mut page = read(Load::Page { after, limit }).await?;
    for scan in 1..=MAX_SCANS {
        let last_read = page.records.last().map(|r| r.record_id.clone());
        keep(&mut page);
        let last_kept = page.records.last().map(|r| r.record_id.clone());
        if last_kept.is_some() && page.next.is_some() && last_kept != last_read {
            page.next = last_kept;
        }
        if page.next.is_none() || !page.records.is_empty() || scan == MAX_SCANS {
            break;
        }
        after = page.next.take();
        page = read(Load::Page { after, limit }).await?;
    }
    Ok(page)
}

/// Whether `record` of `table` is in `user`'s `rows` now (judged on its
/// stored state, every field; a record with no state is not).
pub async fn in_rows(
    session: &Session,
    table: &str,
    record: &str,
    rows: &Filter,
    user: &str,
) -> Result<bool, StoreError> {
    let what = Load::Ids(vec![record.to_owned()]);
    let page = load_page(
        &session.app.store,
        table,
        &what,
        session.app.config.max_page_bytes,
        None,
    )
    .await?;
    let visible = page
        .records
        .iter()
        .any(|r| r.record_id == record && rows.matches(&r.fields, user));
    crate::metrics::rows_filtered(1, u64::from(!visible));
    Ok(visible)
}
