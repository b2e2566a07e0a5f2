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
//!
//! On a Redis Cluster with `RTS_DURABLE_WRITES`, commits go through one
//! group pipe per slot ([`SlotPipes`]): a pipeline must stay in one slot
//! (the cluster connection routes it whole to that slot's primary), so
//! commits of one table group together and end with one wait on the node
//! that ran them. A commit answered `MOVED`/`ASK` inside a pipeline (a slot
//! moving or failing over) is sent again on its own with its wait
//! (`durable::call_on_cluster`), which follows the redirect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use redis::cluster_routing::{Route, SlotAddr};
use redis::{Arg, Cmd, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use super::durable::{call_on_cluster, not_confirmed, Durable};
use super::Conn;

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
    pub fn new(conn: Conn, durable: Durable) -> GroupPipe {
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

async fn drive(conn: Conn, mut rx: mpsc::Receiver<Call>, durable: Durable) {
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

async fn send(mut conn: Conn, group: Vec<Call>, durable: Durable) {
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
    let on_cluster = matches!(conn, Conn::Cluster(_));
    for call in group {
        // A cluster's commit is kept to be sent again after a redirect.
        let again = on_cluster.then(|| call.cmd.clone());
        pipe.add_command(call.cmd);
        replies.push(Pending {
            reply: call.reply,
            durable: call.durable,
            again,
        });
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
            for (pending, value) in replies.into_iter().zip(values) {
                answer(&mut conn, pending, value, confirmed, durable).await;
            }
        }
        Ok(values) => {
            let e = redis::RedisError::from((
                redis::ErrorKind::Parse,
                "pipeline reply count mismatch",
                format!("{} replies for {} calls", values.len(), expected),
            ));
            for p in replies {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for p in replies {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

/// A call of a sent pipeline, waiting for its reply.
struct Pending {
    reply: oneshot::Sender<RedisResult<Value>>,
    durable: bool,
    /// The command, kept on a cluster to send again after a redirect.
    again: Option<Cmd>,
}

/// Answers one call of a pipeline with its `value`: unconfirmed durable
/// writes are a timeout; on a cluster a `MOVED`/`ASK` reply (its slot moved
/// meanwhile) sends the call again on its own, with its wait.
async fn answer(conn: &mut Conn, p: Pending, value: Value, confirmed: bool, durable: Durable) {
    let result = match value.extract_error() {
        Err(e) if e.redirect_node().is_some() => match p.again {
            Some(cmd) => {
                tracing::info!(error = %e, "a grouped commit's slot moved; sending it again");
                let d = if p.durable { durable } else { Durable::none() };
                call_on_cluster(conn, &cmd, d).await
            }
            None => Err(e),
        },
        Ok(_) if p.durable && !confirmed => Err(not_confirmed(durable.mode)),
        other => other,
    };
    let _ = p.reply.send(result);
}

/// One [`GroupPipe`] per cluster slot that commits (see the module doc):
/// made on a slot's first commit, kept for the store's life (at most one
/// per slot, 16,384).
pub struct SlotPipes {
    conn: Conn,
    durable: Durable,
    pipes: Mutex<HashMap<Route, Arc<GroupPipe>>>,
}

impl SlotPipes {
    pub fn new(conn: Conn, durable: Durable) -> SlotPipes {
        SlotPipes {
            conn,
            durable,
            pipes: Mutex::new(HashMap::new()),
        }
    }

    /// The pipe of the slot of `cmd`'s first key (an `FCALL name numkeys
    /// key ...`); `None` for a call without one.
    pub fn for_call(&self, cmd: &Cmd) -> Option<Arc<GroupPipe>> {
        let Arg::Simple(key) = cmd.args_iter().nth(3)? else {
            return None;
        };
        let route = Route::with_key(key, SlotAddr::Master);
        let mut pipes = crate::locks::lock(&self.pipes);
        let pipe = pipes
            .entry(route)
            .or_insert_with(|| Arc::new(GroupPipe::new(self.conn.clone(), self.durable)));
        Some(pipe.clone())
    }
}
