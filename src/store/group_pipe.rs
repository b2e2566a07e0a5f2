//! Group sending of function calls on one Redis: calls made while earlier
//! ones are in flight go out together as one pipeline.
//!
//! Each commit is one `FCALL`; sent on its own it costs a socket write in
//! the sidecar and a read, a reply write and an event-loop turn in Redis.
//! Under load many sessions commit at once, so the driver task below keeps
//! at most [`MAX_IN_FLIGHT`] pipelines in flight and sends whatever queued up
//! meanwhile as the next one: one write, one read, one reply write for the
//! whole group. At low load a call finds a free slot and leaves at once, so
//! nothing waits that would not have waited anyway (Redis runs commands one
//! at a time). Calls of one session are never reordered (a session awaits
//! each request before the next); calls of different sessions never had an
//! order.
//!
//! Each call gets its own reply or error (`ignore_errors`: an error reply
//! of one call does not fail the others); a connection failure fails the
//! calls of that pipeline, as it would have failed them one by one.
//!
//! With `RTS_DURABLE_WRITES` a pipeline holding a durable call (a commit)
//! ends with the wait of [`Durable`]: one per pipeline, on the same
//! connection, so it covers every write before it. Unconfirmed, the
//! durable calls are answered with a timeout (see `durable`).

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{Cmd, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use super::durable::{not_confirmed, Durable};

/// Pipelines in flight at once.
const MAX_IN_FLIGHT: usize = 2;
/// Most calls in one pipeline.
const MAX_GROUP: usize = 128;
/// Calls waiting for a pipeline; more wait for room (back-pressure).
const QUEUE: usize = 4096;

struct Call {
    cmd: Cmd,
    reply: oneshot::Sender<RedisResult<Value>>,
    /// Acknowledged only once durable (a commit).
    durable: bool,
}

/// The sending side; the driver task ends when it is dropped.
pub struct GroupPipe {
    tx: mpsc::Sender<Call>,
    _driver: AbortOnDropHandle<()>,
}

impl GroupPipe {
    pub fn new(conn: ConnectionManager, durable: Durable) -> GroupPipe {
        let (tx, rx) = mpsc::channel(QUEUE);
        let driver = tokio::spawn(drive(conn, rx, durable));
        GroupPipe {
            tx,
            _driver: AbortOnDropHandle::new(driver),
        }
    }

    /// Runs `cmd` in the next group and returns its own reply; a
    /// `durable` call's reply only once the write is durable.
    pub async fn call(&self, cmd: Cmd, durable: bool) -> RedisResult<Value> {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            cmd,
            reply,
            durable,
        };
        if self.tx.send(call).await.is_err() {
            return Err(gone());
        }
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "the command pipeline stopped"))
}

async fn drive(conn: ConnectionManager, mut rx: mpsc::Receiver<Call>, durable: Durable) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            first = rx.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(first) = first else { break };
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(call) => group.push(call),
                        Err(_) => break,
                    }
                }
                in_flight.push(send(conn.clone(), group, durable));
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    // The store is gone: finish what was sent.
    while in_flight.next().await.is_some() {}
}

async fn send(mut conn: ConnectionManager, group: Vec<Call>, durable: Durable) {
    crate::metrics::redis_pipeline(group.len());
    let wait = match group.iter().any(|c| c.durable) {
        true => durable.wait_cmd(),
        false => None,
    };
    if group.len() == 1 && wait.is_none() {
        if let Some(call) = group.into_iter().next() {
            let r = call.cmd.query_async::<Value>(&mut conn).await;
            let _ = call.reply.send(r.and_then(Value::extract_error));
        }
        return;
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut replies = Vec::with_capacity(group.len());
    for call in group {
        pipe.add_command(call.cmd);
        replies.push((call.reply, call.durable));
    }
    let waits = wait.is_some();
    if let Some(w) = wait {
        pipe.add_command(w);
    }
    let started = std::time::Instant::now();
    let expected = replies.len() + usize::from(waits);
    match pipe.query_async::<Vec<Value>>(&mut conn).await {
        Ok(mut values) if values.len() == expected => {
            let confirmed = match waits.then(|| values.pop()).flatten() {
                Some(reply) => {
                    let ok = durable.confirmed(&reply);
                    crate::metrics::durable_wait(started.elapsed(), ok);
                    if !ok {
                        tracing::warn!(reply = ?reply, "a pipeline of commits was not confirmed durable in time; answering timeout");
                    }
                    ok
                }
                None => true,
            };
            for ((reply, is_durable), value) in replies.into_iter().zip(values) {
                let answer = match value.extract_error() {
                    Ok(_) if is_durable && !confirmed => Err(not_confirmed(durable.mode)),
                    other => other,
                };
                let _ = reply.send(answer);
            }
        }
        Ok(values) => {
            let e = redis::RedisError::from((
                redis::ErrorKind::Parse,
                "pipeline reply count mismatch",
                format!("{} replies for {} calls", values.len(), expected),
            ));
            for (reply, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
