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
