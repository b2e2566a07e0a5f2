//! The replay of missed events (docs/protocol.md 3.1): `(after, until]`
//! of a stream, read page by page only as the connection drains, framed by
//! the masked events alone, then the recovery's `connection_recovered`.
//!
//! Data flow: the session's `steps::follow` (a [`crate::session::reply::Then::Replay`]
//! step) → [`replay`] → the store's `range` ([`TableStore`]) → the
//! outbox, paced.

use std::sync::Arc;

use bytes::Bytes;

use super::history::{frames, resync_frame};
use crate::grant::{masking, ReadMask};
use crate::protocol::event::{bounded_groups, ChangeEvent};
use crate::protocol::{ServerEvent, StreamId};
use crate::session::reply::read_mask;
use crate::session::Session;
use crate::store::session_port::TableStore;
use crate::store::tailer::decode_events;

/// Most events read from the stream per page of a recovery.
const MISSED_PAGE: usize = 500;
/// Most bytes of entry data read per page of a recovery (one page is what
/// the sidecar holds for a replay besides the connection's send queue).
const MISSED_PAGE_BYTES: usize = 256 * 1024;

/// Streams the missed events `(after, until]` of `table` as bounded
/// `missed_events` frames, one page at a time: a page is read only once
/// the previous one is queued, and each frame is queued only when the
/// connection has room (so the sidecar holds at most the send queue's
/// bytes and one page). Frames are cut by the masked events alone, never
/// where a page (bounded by the stored entries' bytes) ends: the last frame
/// of a page is held back to take the next page's first events, so where
/// a frame ends never depends on fields hidden from the reader. Then
/// `done`. A page that cannot be read ends the replay with
/// `resync_required` instead. False when the connection closed.
pub async fn replay(
    session: &Session,
    table: &str,
    after: StreamId,
    until: StreamId,
    done: Option<Bytes>,
) -> bool {
    let enc = session.framing();
    let mask: Option<Arc<ReadMask>> = read_mask(session, table);
    let mut after = after;
    // Masked events not yet framed: at most one frame's worth.
    let mut held: Vec<ChangeEvent> = Vec::new();
    loop {
        let page = match session
            .app
            .store
            .range(table, after, until, MISSED_PAGE, MISSED_PAGE_BYTES)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(table, error = %e, "a recovery page could not be read; the client must resync");
                return session
                    .outbox
                    .push_paced(resync_frame(enc, table, "unavailable"))
                    .await;
            }
        };
        let Some((last, _)) = page.last() else { break };
        after = *last;
        // Only the encoded frames (and the held events) are kept while the
        // connection drains: the page is dropped first.
        let page_frames = {
            held.extend(masking::owned_events(
                decode_events(&page, table),
                mask.as_deref(),
            ));
            drop(page);
            // Grouping is greedy, so every group but the last is final.
            let last = bounded_groups(&held).last().map_or(0, |g| g.len());
            let ready = held.len() - last;
            let out = frames(ServerEvent::MissedEvents, &held[..ready], enc);
            held.drain(..ready);
            out
        };
        for frame in page_frames {
            if !session.outbox.push_paced(frame).await {
                return false;
            }
        }
        if after == until {
            break;
        }
    }
    for frame in frames(ServerEvent::MissedEvents, &held, enc) {
        if !session.outbox.push_paced(frame).await {
            return false;
        }
    }
    match done {
        Some(done) => session.outbox.push_paced(done).await,
        None => true,
    }
}
