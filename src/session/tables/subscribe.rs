//! `subscribe_to_table` (with or without `lastEventId`) and
//! `recover_connection`: both through the one `join`, answered with
//! their acks. A fresh subscription's steps may be superseded by a
//! recovery of the same table sent right after (see `reply::Held`).
//!
//! Data flow: `route` → [`subscribe`] / [`recover`] → `join` → an
//! [`crate::session::reply::Answer`].

use serde_json::{json, Value};

use super::history::History;
use super::join::join;
use super::port::{user_of, Conn};
use crate::protocol::messages::{RecoverReq, SubscribeReq};
use crate::protocol::StreamId;
use crate::session::reply::{Reply, Then};

/// `subscribe_to_table`: the ack (its start, color and effective grant),
/// then `table_users` and the history.
pub async fn subscribe<C: Conn>(session: &mut C, req: SubscribeReq) -> Reply {
    let history = match &req.last_event_id {
        Some(l) => History::Since(StreamId::parse_or_zero(l)),
        None => History::Recent,
    };
    let recovering = matches!(history, History::Since(_));
    let joined = join(session, &req, history, recovering).await?;
    let mut ack =
        json!({"tableId": req.table_id, "lastEventId": joined.start, "color": joined.color});
    // The effective grant, so a client knows which fields it may read and
    // write (docs/protocol.md 2.1): `access`, and `fields` when they differ.
    if let Some(grant) = user_of(session)?.grants.table(&req.table_id) {
        if let Value::Object(described) = grant.describe() {
            for (k, v) in described {
                ack[k] = v;
            }
        }
    }
    if recovering {
        ack["missedEventsCount"] = json!(joined.missed);
    }
    let table = req.table_id;
    let mut answer = joined.answer(ack);
    let fresh = answer
        .then
        .iter()
        .any(|t| matches!(t, Then::Activate(t) if *t == table));
    if fresh && !recovering {
        answer.supersedable = Some(table);
    }
    Ok(answer)
}

/// `recover_connection`: replays what the client missed, then (if it was
/// not subscribed) subscribes.
pub async fn recover<C: Conn>(session: &mut C, req: RecoverReq) -> Reply {
    let history = match &req.last_event_id {
        Some(l) => History::Since(StreamId::parse_or_zero(l)),
        // No position: a plain subscribe, reported as a recovery of nothing.
        None => History::Recent,
    };
    let joined = join(session, &req.as_subscribe(), history, true).await?;
    let ack = json!({"tableId": req.table_id, "missedEventsCount": joined.missed,
        "lastEventId": joined.start});
    Ok(joined.answer(ack))
}

#[cfg(test)]
mod tests {
    use super::super::fake::{answered, steps, subscribe_req, FakeConn};
    use super::*;
    use crate::session::reply::Held;

    #[tokio::test]
    async fn a_subscribe_sends_users_then_recent_changes_then_activates() {
        let mut conn = FakeConn::new(&["t"], 3);
        let (ack, then) = answered(subscribe(&mut conn, subscribe_req("t", None)).await);
        assert_eq!(ack["lastEventId"], "3-0");
        assert_eq!(
            then,
            ["table_users", "recent_changes 1-0 2-0 3-0", "activate t"]
        );
    }

    #[tokio::test]
    async fn a_subscribe_with_last_event_id_replays_the_missed_range_before_activating() {
        let mut conn = FakeConn::new(&["t"], 3);
        let (ack, then) = answered(subscribe(&mut conn, subscribe_req("t", Some("1-0"))).await);
        assert_eq!(ack["missedEventsCount"], 2);
        assert_eq!(
            then,
            [
                "table_users",
                "replay t (1-0, 3-0] connection_recovered",
                "activate t"
            ]
        );
    }

    #[tokio::test]
    async fn only_a_fresh_subscribe_without_last_event_id_may_be_superseded() {
        let mut conn = FakeConn::new(&["t", "t2"], 3);
        let plain = subscribe(&mut conn, subscribe_req("t", None)).await;
        let recovering = subscribe(&mut conn, subscribe_req("t2", Some("1-0"))).await;
        assert_eq!(
            plain.ok().and_then(|a| a.supersedable),
            Some("t".to_owned())
        );
        assert_eq!(recovering.ok().map(|a| a.supersedable), Some(None));
    }

    /// A `recover_connection` of `table` from `last`.
    fn recover_req(table: &str, last: &str) -> RecoverReq {
        RecoverReq {
            table_id: table.to_owned(),
            view_id: None,
            base_id: None,
            last_event_id: Some(last.to_owned()),
            base_last_event_id: None,
            last_version: None,
        }
    }

    #[tokio::test]
    async fn a_recovery_of_a_subscribed_table_replays_without_activating_again() {
        let mut conn = FakeConn::new(&["t"], 3);
        answered(subscribe(&mut conn, subscribe_req("t", None)).await);
        let (ack, then) = answered(recover(&mut conn, recover_req("t", "2-0")).await);
        assert_eq!(ack["missedEventsCount"], 1);
        assert_eq!(
            then,
            ["table_users", "replay t (2-0, 3-0] connection_recovered"]
        );
    }

    #[tokio::test]
    async fn a_recovery_superseding_a_fresh_subscribe_replays_once_then_activates() {
        let mut conn = FakeConn::new(&["t"], 3);
        let fresh = subscribe(&mut conn, subscribe_req("t", None)).await;
        let Ok(fresh) = fresh else {
            panic!("the subscribe failed")
        };
        let held = Held {
            table: "t".to_owned(),
            then: fresh.then,
            until: tokio::time::Instant::now(),
        };
        let recovery = recover(&mut conn, recover_req("t", "1-0")).await;
        let Ok(mut recovery) = recovery else {
            panic!("the recovery failed")
        };
        held.supersede(&mut recovery.then);
        assert_eq!(
            steps(&recovery.then),
            [
                "table_users",
                "replay t (1-0, 3-0] connection_recovered",
                "activate t"
            ]
        );
    }
}
