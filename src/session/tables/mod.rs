//! Table subscriptions of a connection. `subscribe_to_table` (with or
//! without `lastEventId`) and `recover_connection` (subscribed or not) all
//! go through one `join`, which keeps the order of docs/protocol.md 3.1:
//!
//! 1. The connection is registered in the hub *pending* at the table's
//!    cursor, the subscription's start `S`: live events after `S` are held
//!    for it from then on.
//! 2. Presence is joined and the history is sized, bounded by `S`: the
//!    latest events at or before it (`recent_changes`, at most
//!    `RTS_RECENT_CHANGES` and `RTS_MAX_PAGE_BYTES`), or exactly the events
//!    in `(lastEventId, S]` (`missed_events`, counted in Redis first), or
//!    `resync_required` when those are gone or too many.
//! 3. The handler answers with the ack and the steps that follow it
//!    ([`Then`]): `table_users`, the history (a replay is read page by page,
//!    each page only once the connection has room for it), then
//!    `connection_recovered`; only then is the subscriber activated and the
//!    held events follow. So no event comes twice, none is missing, none
//!    arrives before the ack, and a reader that does not drain costs at
//!    most its send queue's bytes and one page.
//!
//! On a table already subscribed, a recovery replays `(lastEventId, S]` of
//! the existing subscription; later events arrive live as they did.
//!
//! One idea per file: [`subscribe`] (the two requests and their acks),
//! [`join`] (the entry path and its rollback), [`base`] (base streams),
//! [`history`] (what history a join sends), [`replay`] (missed events at
//! the reader's pace), [`places`] (the subscription caps), [`leave`], and [`port`] (what
//! all of them need of the connection, a fake in the tests).

mod base;
#[cfg(test)]
mod fake;
mod history;
mod join;
mod leave;
mod places;
pub mod port;
mod replay;
mod subscribe;

pub use base::BaseSubscription;
pub use history::{MAX_MISSED_BYTES, MAX_MISSED_EVENTS};
pub use leave::{leave_table, unsubscribe};
pub use replay::replay;
pub use subscribe::{recover, subscribe};
