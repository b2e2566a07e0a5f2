//! The one entry path of a table subscription (the order of
//! docs/protocol.md 3.1, see [`super`]): admitted (read access, the caps),
//! registered pending in the hub at the subscription's start, presence
//! joined and the history planned, the table recorded, its base joined.
//! A join new to the connection that fails part way is rolled back by one
//! function ([`undo_join`]), by how far it got.
//!
//! Data flow: `subscribe` / `recover` → [`join`] → the hub, the presence
//! and history of the store, `base::join_base` → a [`Joined`] answer.

use std::sync::Arc;

use serde_json::{json, Value};

use super::base::{join_base, BaseJoin};
use super::history::{after_ack, plan_history, History, HistoryPlan};
use super::leave::leave_table;
use super::places::{release_place, take_place};
use super::port::{read_mask, user_of, Conn};
use crate::cohort::Scope;
use crate::grant::{masking, ReadMask};
use crate::protocol::messages::SubscribeReq;
use crate::protocol::{RequestError, StreamId};
use crate::session::reply::{forbidden, Answer, Then};
use crate::store::session_port::TableStore;
use crate::store::StoreError;

/// What a join answers with.
pub(super) struct Joined {
    pub(super) start: StreamId,
    pub(super) color: String,
    pub(super) missed: usize,
    pub(super) resync: Option<&'static str>,
    /// The base stream's start, when the subscribe joined its `baseId`.
    pub(super) base_start: Option<StreamId>,
    /// Whether the named base's events reach the connection (`None`: no
    /// base named).
    pub(super) base_events: Option<bool>,
    /// What follows the ack.
    pub(super) then: Vec<Then>,
}

impl Joined {
    /// The answer of a join: `ack` with what every join's ack says
    /// (`resyncRequired`, `baseLastEventId`), then the steps that follow.
    pub(super) fn answer(self, mut ack: Value) -> Answer {
        if let Some(reason) = self.resync {
            ack["resyncRequired"] = json!(reason);
        }
        if let Some(base_start) = self.base_start {
            ack["baseLastEventId"] = json!(base_start);
        }
        if let Some(base_events) = self.base_events {
            ack["baseEvents"] = json!(base_events);
        }
        Answer {
            result: ack,
            then: self.then,
            supersedable: None,
        }
    }
}

/// How far a join new to the connection got, for its rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reached {
    /// Its place under the caps was taken.
    Counted,
    /// It is registered (pending) in the hub.
    InHub,
    /// Its presence is joined too.
    Present,
    /// It is one of the connection's tables.
    Subscribed,
}

/// The one entry path (see the module docs). `recovery` adds
/// `connection_recovered` after the history.
pub(super) async fn join<C: Conn>(
    session: &mut C,
    req: &SubscribeReq,
    history: History,
    recovery: bool,
) -> Result<Joined, RequestError> {
    let table = req.table_id.as_str();
    let existing = admit(session, table)?;
    let fresh = existing.is_none();
    let user = user_of(session)?;
    let presence_doc = json!({
        "userId": user.user_id, "userName": user.user_name, "avatarUrl": user.avatar_url,
        "tableId": table, "viewId": req.view_id,
    });
    let mask = read_mask(session, table);
    let scope = scope(session, req).await?;
    let filtered = scope.as_ref().and_then(Scope::filter).is_some();
    let start = match existing {
        Some(start) => start,
        None => enter(session, table, mask.clone(), scope).await?,
    };
    let (color, users, plan) =
        match read(session, table, &presence_doc, &history, start, filtered).await {
            Ok(r) => r,
            Err((reached, e)) => {
                if fresh {
                    undo_join(session, table, reached).await;
                }
                return Err(e.into());
            }
        };
    session.tables_mut().insert(table.to_owned(), start);
    let missed = plan.replay.as_ref().map(|(_, n)| *n).unwrap_or(0);
    let resync = plan.resync;
    let mut users = masked_users(users, mask.as_deref());
    if filtered {
        users.iter_mut().for_each(crate::cohort::unplaced);
    }
    let mut then = after_ack(session.framing(), table, start, users, plan, recovery);
    if fresh {
        then.push(Then::Activate(table.to_owned()));
    }
    let base = match join_base(session, req, table).await {
        Ok(b) => b,
        Err(e) => {
            if fresh {
                undo_join(session, table, Reached::Subscribed).await;
            }
            return Err(e);
        }
    };
    let (base_start, base_events) = match base {
        BaseJoin::NotNamed => (None, None),
        BaseJoin::Refused => (None, Some(false)),
        BaseJoin::Joined(start, base_then) => {
            then.extend(base_then);
            (Some(start), Some(true))
        }
    };
    Ok(Joined {
        start,
        color,
        missed,
        resync,
        base_start,
        base_events,
        then,
    })
}

/// Registers a table new to the connection pending in the hub; its start.
async fn enter<C: Conn>(
    session: &mut C,
    table: &str,
    mask: Option<Arc<ReadMask>>,
    scope: Option<Scope>,
) -> Result<StreamId, RequestError> {
    match session.hub_join(table, mask, scope).await {
        Ok(start) => Ok(start),
        Err(e) => {
            undo_join(session, table, Reached::Counted).await;
            Err(e.into())
        }
    }
}

/// Joins presence and plans the history: the connection's color, the
/// table's users, the plan. A failure says how far it got (presence is
/// left again only once joined).
async fn read<C: Conn>(
    session: &C,
    table: &str,
    presence_doc: &Value,
    history: &History,
    start: StreamId,
    filtered: bool,
) -> Result<(String, Vec<Value>, HistoryPlan), (Reached, StoreError)> {
    let store = session.store();
    let joined = store
        .join_presence(table, session.conn_id(), presence_doc)
        .await
        .map_err(|e| (Reached::InHub, e))?;
    let plan = plan_history(session, table, history, start, filtered)
        .await
        .map_err(|e| (Reached::Present, e))?;
    Ok((joined.color, joined.users, plan))
}

/// The table's users as this reader may see them.
fn masked_users(mut users: Vec<Value>, mask: Option<&ReadMask>) -> Vec<Value> {
    if let Some(mask) = mask {
        users
            .iter_mut()
            .for_each(|u| masking::presence_user(u, mask));
    }
    users
}

/// v1.3 (2.2, 3.5): the subscription's scope: its row grant and the view
/// it names with that view's filter now (an unknown view or one without a
/// filter is the whole table, until a `view` event gives it one). Its
/// filter is the row grant ∧ the view's filter.
async fn scope<C: Conn>(session: &C, req: &SubscribeReq) -> Result<Option<Scope>, RequestError> {
    let table = req.table_id.as_str();
    let view = match req.view_id.as_deref() {
        Some(v) => Some((v, session.view_filter(table, v).await?)),
        None => None,
    };
    let user = user_of(session)?;
    Ok(Scope::of(user.grants.rows(table), view, &user.user_id))
}

/// Rolls back a join new to the connection that failed after `reached`:
/// what it took is given back (its hub registration, its table and
/// presence, its place under the caps).
async fn undo_join<C: Conn>(session: &mut C, table: &str, reached: Reached) {
    match reached {
        Reached::Counted => release_place(session),
        Reached::InHub => {
            session.hub_leave(table).await;
            release_place(session);
        }
        // Leaving the table (as an unsubscribe would) leaves the hub and
        // presence and gives the place back.
        Reached::Present | Reached::Subscribed => {
            session.tables_mut().remove(table);
            leave_table(session, table).await;
        }
    }
}

/// Checks a join may happen: read access, and for a table new to the
/// connection its caps (per connection, and per user, which counts it).
/// Returns the start of the connection's subscription to it, if any.
fn admit<C: Conn>(session: &C, table: &str) -> Result<Option<StreamId>, RequestError> {
    let user = user_of(session)?;
    if !user.grants.can_read(table) {
        return Err(forbidden("read", table));
    }
    let existing = session.tables().get(table).cloned();
    if existing.is_some() {
        return Ok(existing);
    }
    take_place(session, &user.user_id)?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::super::fake::{answered, subscribe_req, Call, FakeConn};
    use super::super::subscribe::subscribe;

    /// Nothing of a join is left: no table, no base, no hub registration,
    /// no presence, no place.
    fn assert_undone(conn: &FakeConn) {
        assert!(conn.tables.is_empty(), "tables: {:?}", conn.tables.keys());
        assert!(conn.bases.is_empty(), "a base is left");
        assert_eq!(conn.hub(), Vec::<String>::new(), "hub");
        assert_eq!(conn.present(), Vec::<String>::new(), "presence");
        assert_eq!(conn.places(), 0, "places");
    }

    #[tokio::test]
    async fn a_join_whose_hub_registration_fails_gives_its_place_back() {
        let mut conn = FakeConn::new(&["t"], 3);
        conn.fail(Call::HubJoin, "t");
        assert!(subscribe(&mut conn, subscribe_req("t", None))
            .await
            .is_err());
        assert_undone(&conn);
    }

    #[tokio::test]
    async fn a_join_whose_presence_join_fails_leaves_the_hub_and_gives_its_place_back() {
        let mut conn = FakeConn::new(&["t"], 3);
        conn.fail(Call::Presence, "t");
        assert!(subscribe(&mut conn, subscribe_req("t", None))
            .await
            .is_err());
        assert_undone(&conn);
    }

    #[tokio::test]
    async fn a_join_whose_recent_changes_cannot_be_read_is_undone_presence_included() {
        let mut conn = FakeConn::new(&["t"], 3);
        conn.fail(Call::Recent, "t");
        assert!(subscribe(&mut conn, subscribe_req("t", None))
            .await
            .is_err());
        assert_undone(&conn);
    }

    #[tokio::test]
    async fn a_join_whose_missed_range_cannot_be_placed_is_undone_presence_included() {
        let mut conn = FakeConn::new(&["t"], 3);
        conn.fail(Call::Position, "t");
        let req = subscribe_req("t", Some("1-0"));
        assert!(subscribe(&mut conn, req).await.is_err());
        assert_undone(&conn);
    }

    #[tokio::test]
    async fn a_join_whose_base_check_fails_is_undone() {
        let mut conn = FakeConn::new(&["t"], 3);
        conn.fail(Call::MayReadBase, "t");
        let mut req = subscribe_req("t", None);
        req.base_id = Some("b".to_owned());
        assert!(subscribe(&mut conn, req).await.is_err());
        assert_undone(&conn);
    }

    #[tokio::test]
    async fn a_failed_recovery_of_a_subscribed_table_keeps_its_subscription() {
        let mut conn = FakeConn::new(&["t"], 3);
        answered(subscribe(&mut conn, subscribe_req("t", None)).await);
        conn.fail(Call::Position, "t");
        assert!(subscribe(&mut conn, subscribe_req("t", Some("1-0")))
            .await
            .is_err());
        assert!(conn.tables.contains_key("t"));
        assert_eq!(conn.hub(), ["t"]);
        assert_eq!(conn.places(), 1);
    }
}
