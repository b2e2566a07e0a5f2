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

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{Cmd, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

/// Pipelines in flight at once.
const MAX_IN_FLIGHT: usize = 2;
/// Most calls in one pipeline.
const MAX_GROUP: usize = 128;
/// Calls waiting for a pipeline; more wait for room (back-pressure).
const QUEUE: usize = 4096;

struct Call {
    cmd: Cmd,
    reply: oneshot::Sender<RedisResult<Value>>,
}

/// The sending side; the driver task ends when it is dropped.
pub struct GroupPipe {
    tx: mpsc::Sender<Call>,
    _driver: AbortOnDropHandle<()>,
}

impl GroupPipe {
    pub fn new(conn: ConnectionManager) -> GroupPipe {
        let (tx, rx) = mpsc::channel(QUEUE);
        let driver = tokio::spawn(drive(conn, rx));
        GroupPipe {
            tx,
            _driver: AbortOnDropHandle::new(driver),
        }
    }

    /// Runs `cmd` in the next group and returns its own reply.
    pub async fn call(&self, cmd: Cmd) -> RedisResult<Value> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Call { cmd, reply }).await.is_err() {
            return Err(gone());
        }
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "the command pipeline stopped"))
}

async fn drive(conn: ConnectionManager, mut rx: mpsc::Receiver<Call>) {
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
                in_flight.push(send(conn.clone(), group));
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    // The store is gone: finish what was sent.
    while in_flight.next().await.is_some() {}
}

async fn send(mut conn: ConnectionManager, group: Vec<Call>) {
    crate::metrics::redis_pipeline(group.len());
    if group.len() == 1 {
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
        replies.push(call.reply);
    }
    match pipe.query_async::<Vec<Value>>(&mut conn).await {
        Ok(values) if values.len() == replies.len() => {
            for (reply, value) in replies.into_iter().zip(values) {
                let _ = reply.send(value.extract_error());
            }
        }
        Ok(values) => {
            let e = redis::RedisError::from((
                redis::ErrorKind::Parse,
                "pipeline reply count mismatch",
                format!("{} replies for {} calls", values.len(), replies.len()),
            ));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
