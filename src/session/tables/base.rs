//! Base subscriptions (docs/protocol.md 3.2): a subscribe naming a
//! `baseId` the connection may read joins that base's stream once per
//! connection, however many of its tables it subscribes to; with
//! `baseLastEventId` the base events missed since are replayed (or
//! `resync_required {baseId}`). A base joined for this subscribe is left
//! again if the rest of its join fails ([`undo_base_join`]).
//!
//! Data flow: `join` → [`join_base`] → `base_access::may_read`, the hub
//! (the base stream's start), `history::plan_history` → the steps after
//! the ack.

use std::collections::HashSet;

use super::history::{plan_history, resync_frame, History};
use super::places::{release_place, take_place};
use super::port::{user_of, Conn};
use crate::change::ids::base_stream_name;
use crate::protocol::messages::SubscribeReq;
use crate::protocol::{RequestError, StreamId};
use crate::session::reply::Then;

/// A base whose stream the connection reads, for the tables of it that
/// the connection subscribed to (docs/protocol.md 3.2).
pub struct BaseSubscription {
    /// The base stream's position when the connection joined it.
    pub start: StreamId,
    pub tables: HashSet<String>,
    /// A `baseLastEventId` was replayed already: the connection has every
    /// base event after it, so a later one (another table's join of the
    /// same base) replays nothing again.
    pub recovered: bool,
}

/// What a subscribe's `baseId` came to.
pub(super) enum BaseJoin {
    /// The subscribe named no base.
    NotNamed,
    /// The connection may not read the base it named: the table is
    /// subscribed without base events (`baseEvents: false`).
    Refused,
    /// The base stream's start and the steps that follow the ack.
    Joined(StreamId, Vec<Then>),
}

/// Joins the base of a subscribe (its `baseId`), once per connection: the
/// base's events then reach the connection once, however many of its
/// tables it subscribes to. Only a base the token grants, or the one the
/// server holds for the table, is joined (docs/protocol.md 3.2); a base
/// new to the connection counts against the subscription caps. With
/// `baseLastEventId` the base events missed since are replayed (or
/// `resync_required {baseId}`).
pub(super) async fn join_base<C: Conn>(
    session: &mut C,
    req: &SubscribeReq,
    table: &str,
) -> Result<BaseJoin, RequestError> {
    let Some(base) = req.base_id.as_deref() else {
        return Ok(BaseJoin::NotNamed);
    };
    if !session.may_read_base(table, base).await? {
        tracing::info!(table, base, "a subscribe named a base it may not read");
        return Ok(BaseJoin::Refused);
    }
    let (start, fresh) = enter_base(session, base, table).await?;
    let mut then = match base_history(session, req, base, start).await {
        Ok(then) => then,
        Err(e) => {
            if fresh {
                undo_base_join(session, base).await;
            }
            return Err(e);
        }
    };
    if fresh {
        then.push(Then::Activate(base_stream_name(base)));
    }
    Ok(BaseJoin::Joined(start, then))
}

/// The connection's subscription to `base`, for `table` too: its start,
/// and whether it was joined now (a place taken, the hub joined).
async fn enter_base<C: Conn>(
    session: &mut C,
    base: &str,
    table: &str,
) -> Result<(StreamId, bool), RequestError> {
    if let Some(sub) = session.bases_mut().get_mut(base) {
        sub.tables.insert(table.to_owned());
        return Ok((sub.start, false));
    }
    admit_base(session)?;
    let name = base_stream_name(base);
    let start = match session.hub_join(&name, None, None).await {
        Ok(start) => start,
        Err(e) => {
            release_place(session);
            return Err(e.into());
        }
    };
    let sub = BaseSubscription {
        start,
        tables: HashSet::from([table.to_owned()]),
        recovered: false,
    };
    session.bases_mut().insert(base.to_owned(), sub);
    Ok((start, true))
}

/// The base events the subscribe's `baseLastEventId` missed (once per
/// base and connection): a replay, or `resync_required`.
async fn base_history<C: Conn>(
    session: &mut C,
    req: &SubscribeReq,
    base: &str,
    start: StreamId,
) -> Result<Vec<Then>, RequestError> {
    let mut then = Vec::new();
    let recovered = session.bases().get(base).is_some_and(|b| b.recovered);
    let Some(last) = req.base_last_event_id.as_ref().filter(|_| !recovered) else {
        return Ok(then);
    };
    if let Some(sub) = session.bases_mut().get_mut(base) {
        sub.recovered = true;
    }
    let name = base_stream_name(base);
    let history = History::Since(StreamId::parse_or_zero(last));
    let plan = plan_history(session, &name, &history, start, false).await?;
    if let Some(reason) = plan.resync {
        tracing::info!(base, reason, "base recovery needs a resync");
        then.push(Then::Frame(resync_frame(session.framing(), &name, reason)));
    } else if let Some((after, _)) = plan.replay {
        then.push(Then::Replay {
            table: name,
            after,
            until: start,
            done: None,
        });
    }
    Ok(then)
}

/// Leaves a base joined for a subscribe that then failed: its
/// subscription, its hub place and its count go.
async fn undo_base_join<C: Conn>(session: &mut C, base: &str) {
    session.bases_mut().remove(base);
    let name = base_stream_name(base);
    session.hub_leave(&name).await;
    release_place(session);
}

/// A base new to the connection takes a place under the subscription caps,
/// as a table does (per connection, and per user, which counts it).
fn admit_base<C: Conn>(session: &C) -> Result<(), RequestError> {
    let user = user_of(session)?;
    take_place(session, &user.user_id)
}

#[cfg(test)]
mod tests {
    use super::super::fake::{answered, subscribe_req, Call, FakeConn};
    use super::super::subscribe::subscribe;
    use super::*;

    /// A subscribe to `table` naming base `b`, from `base_last` when given.
    fn with_base(table: &str, base_last: Option<&str>) -> SubscribeReq {
        let mut req = subscribe_req(table, None);
        req.base_id = Some("b".to_owned());
        req.base_last_event_id = base_last.map(str::to_owned);
        req
    }

    #[tokio::test]
    async fn a_base_joined_with_its_first_table_is_replayed_then_activated_after_the_table() {
        let b = base_stream_name("b");
        let mut conn = FakeConn::new(&["t", &b], 3);
        let (ack, then) = answered(subscribe(&mut conn, with_base("t", Some("2-0"))).await);
        assert_eq!(ack["baseLastEventId"], "3-0");
        let replay = format!("replay {b} (2-0, 3-0]");
        let activate = format!("activate {b}");
        let expected = ["table_users", "recent_changes 1-0 2-0 3-0", "activate t"];
        assert_eq!(
            then,
            [&expected[..], &[replay.as_str(), activate.as_str()]].concat()
        );
    }

    #[tokio::test]
    async fn a_base_whose_hub_registration_fails_is_undone_with_its_table() {
        let b = base_stream_name("b");
        let mut conn = FakeConn::new(&["t", &b], 3);
        conn.fail(Call::HubJoin, &b);
        assert!(subscribe(&mut conn, with_base("t", None)).await.is_err());
        assert!(conn.tables.is_empty() && conn.bases.is_empty());
        assert_eq!(conn.hub(), Vec::<String>::new());
        assert_eq!(conn.present(), Vec::<String>::new());
        assert_eq!(conn.places(), 0);
    }

    #[tokio::test]
    async fn a_base_whose_missed_events_cannot_be_placed_is_left_with_its_table() {
        let b = base_stream_name("b");
        let mut conn = FakeConn::new(&["t", &b], 3);
        conn.fail(Call::Position, &b);
        assert!(subscribe(&mut conn, with_base("t", Some("1-0")))
            .await
            .is_err());
        assert!(conn.tables.is_empty() && conn.bases.is_empty());
        assert_eq!(conn.hub(), Vec::<String>::new());
        assert_eq!(conn.present(), Vec::<String>::new());
        assert_eq!(conn.places(), 0);
    }

    #[tokio::test]
    async fn a_base_new_to_a_subscribed_table_is_left_when_its_missed_events_fail() {
        let b = base_stream_name("b");
        let mut conn = FakeConn::new(&["t", &b], 3);
        answered(subscribe(&mut conn, subscribe_req("t", None)).await);
        conn.fail(Call::Position, &b);
        assert!(subscribe(&mut conn, with_base("t", Some("1-0")))
            .await
            .is_err());
        assert!(conn.bases.is_empty());
        assert_eq!(conn.hub(), ["t"]);
        assert_eq!(conn.places(), 1);
    }

    #[tokio::test]
    async fn a_base_another_table_holds_stays_when_a_later_join_of_it_fails() {
        let b = base_stream_name("b");
        let mut conn = FakeConn::new(&["t", "t2", &b], 3);
        answered(subscribe(&mut conn, with_base("t", None)).await);
        conn.fail(Call::Position, &b);
        assert!(subscribe(&mut conn, with_base("t2", Some("1-0")))
            .await
            .is_err());
        assert_eq!(conn.hub(), ["t".to_owned(), b.clone()]);
        assert_eq!(conn.bases.get("b").map(|s| s.tables.len()), Some(1));
        assert!(!conn.tables.contains_key("t2"));
        assert_eq!(conn.places(), 2);
    }
}
