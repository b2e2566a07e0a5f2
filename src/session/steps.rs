//! Answering a request: its ack (when it has a `rid`), then the steps
//! that follow it in order ([`Then`]: frames, a replay read at the
//! reader's pace, the subscriber made live), or its error through the
//! [`edge`]. A fresh subscription's steps are held for a moment (see
//! [`Held`]) and superseded by a recovery of the same table.
//!
//! Data flow: `route::dispatch` → [`answer`] → the outbox; the read loop
//! calls [`release_held`] when the hold is over.

use super::edge::{self, Stage};
use super::reply::{send_value, Held, Reply, Then, HOLD};
use super::{tables, Session};
use crate::protocol::ServerEvent;

/// Sends a request's answer: its ack (when it has a `rid`) and the steps
/// that follow, or its error. Steps a recovery `superseded` are dropped
/// but for the activation, which follows the recovery's replay; a fresh
/// subscription's steps are held (see [`Held`]).
pub async fn answer(
    session: &mut Session,
    reply: Reply,
    superseded: Option<Held>,
    event: &str,
    rid: Option<u64>,
) {
    match reply {
        Ok(mut answer) => {
            if rid.is_some() {
                send_value(session, ServerEvent::Ack, &answer.result, rid);
            }
            if let Some(h) = superseded {
                h.supersede(&mut answer.then);
            }
            match answer.supersedable.take() {
                Some(table) => {
                    session.held = Some(Box::new(Held {
                        table,
                        then: answer.then,
                        until: tokio::time::Instant::now() + HOLD,
                    }));
                }
                None => follow(session, answer.then).await,
            }
        }
        Err(e) => {
            if let Some(h) = superseded {
                follow(session, h.then).await;
            }
            edge::fail(session, &e, Stage::Request, Some(event), rid);
        }
    }
}

/// Sends the steps held after a fresh subscription (no recovery came).
pub async fn release_held(session: &mut Session) {
    if let Some(h) = session.held.take() {
        follow(session, h.then).await;
    }
}

/// Queues what follows an ack, in order, each frame only once the
/// connection has room for it (its queue's byte bound): history is read
/// from Redis no faster than the client reads it. A connection that closes
/// meanwhile gets no more frames, but its subscribers are still activated
/// (and then removed with the connection).
pub async fn follow(session: &mut Session, then: Vec<Then>) {
    let mut open = true;
    for step in then {
        match step {
            Then::Frame(frame) if open => open = session.outbox.push_paced(frame).await,
            Then::Replay {
                table,
                after,
                until,
                done,
            } if open => {
                open = tables::replay(session, &table, after, until, done).await;
            }
            Then::Activate(table) => session.app.hub.activate(&table, session.conn_id()),
            Then::Frame(_) | Then::Replay { .. } => {}
        }
    }
}
