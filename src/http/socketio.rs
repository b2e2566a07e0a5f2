//! `/socket.io/` (docs/protocol.md section 10): Engine.IO's HTTP side.
//! Long-polling (`transport=polling`): the handshake GET opens a session
//! (an rtsync session whose input is the POSTs and whose output answers
//! the GETs), then GETs and POSTs with its `sid`. WebSocket
//! (`transport=websocket`): a new connection, or, with a `sid`, the
//! upgrade of a polling session (`2probe`/`3probe`, then `5`). Errors are
//! Engine.IO's: HTTP 400 `{"code", "message"}`.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::json_io::{Body, BODY_READ_TIMEOUT};
use super::ws::{accept, at_capacity, upgrade, Endpoint, Handshake};
use crate::app::App;
use crate::outbox::long_poll::{PollCmd, PollFormat};
use crate::outbox::wire_writer::{close_payload, Burst, Opcode};
use crate::session::socket::{Socket, WriteHalf};
use crate::session::{Input, Opened, Output, Transport};
use crate::socketio::engine::{self, Packet};
use crate::socketio::framing::SOCKETIO_JSON;
use crate::socketio::polling::{
    read_probe, read_upgrade, Link, Started, Violation, UPGRADE_TIMEOUT,
};
use crate::socketio::route::{
    cors, engine_error, preflight, text, Route, BAD_REQUEST, PAYLOAD_TOO_LARGE, SESSION_UNKNOWN,
};

pub async fn serve(app: Arc<App>, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
    let origin = req.headers().get(hyper::header::ORIGIN).cloned();
    let mut response = route(app.clone(), req, peer).await;
    cors(&app.config.cors_origins, origin.as_ref(), &mut response);
    response
}

async fn route(app: Arc<App>, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
    match Route::of(req.method(), req.uri().query()) {
        Ok(Route::Preflight) => preflight(),
        Ok(Route::Handshake) => handshake(app, peer),
        Ok(Route::Get(sid)) => get(&app, &sid).await,
        Ok(Route::Post(sid)) => post(&app, &sid, req).await,
        Ok(Route::WebSocket(None)) => upgrade(app, req, peer, Endpoint::SocketIo),
        Ok(Route::WebSocket(Some(sid))) => upgrade_session(app, req, &sid),
        Err(e) => engine_error(e),
    }
}

/// The first GET: opens a session and answers with Engine.IO's `open`.
/// The session counts open and waits to authenticate from now on (the
/// oldest waiting connections, of its address first, make room); it runs,
/// with its channels, once the client polls or upgrades. A handshake never
/// followed by either is closed at the earlier of the authentication
/// deadline and `pingInterval + pingTimeout` (it could not have answered
/// the first ping), or sooner when newer connections need its place; its
/// sid is forgotten then.
fn handshake(app: Arc<App>, peer: IpAddr) -> Response<Body> {
    if let Some(full) = at_capacity(&app) {
        return full;
    }
    let sid = app.polling.new_sid();
    let (start_tx, start_rx) = oneshot::channel();
    app.polling
        .insert(sid.clone(), Arc::new(Link::new(start_tx)));
    let (opened, open) = Opened::handshake(&app, &SOCKETIO_JSON, peer, &sid, true);
    let task_app = app.clone();
    let task_sid = sid.clone();
    app.tasks.spawn(async move {
        let auth_deadline = opened.auth_deadline();
        let silent_deadline = opened.silent_deadline(&task_app.config);
        let started = tokio::select! {
            started = start_rx => started.map_err(|_| "closed before it was polled"),
            () = opened.outbox.closed() => Err("closed before it was polled"),
            () = tokio::time::sleep_until(auth_deadline.min(silent_deadline)) => {
                if auth_deadline <= silent_deadline {
                    crate::metrics::auth_failure("timeout");
                    Err("never polled")
                } else {
                    Err("ping timeout before it was polled")
                }
            }
            () = task_app.shutdown.cancelled() => Err("server shutting down"),
        };
        match started {
            Ok(Started { cmds, input }) => {
                let transport = Transport {
                    input: Input::Channel(input),
                    output: Output::Polling {
                        cmds,
                        format: PollFormat {
                            separator: engine::SEPARATOR as u8,
                            noop: Bytes::from_static(b"6"),
                            close: Bytes::from_static(b"1"),
                            max_payload: task_app.config.max_frame_bytes,
                        },
                    },
                    engine_sid: Some(task_sid.clone()),
                };
                // Boxed: a session waiting for its first poll holds only
                // this task's small state.
                Box::pin(crate::session::run_opened(
                    task_app.clone(),
                    opened,
                    transport,
                    None,
                    peer,
                ))
                .await;
            }
            Err(reason) => {
                task_app.polling.remove(&task_sid);
                opened.abandon(&task_app, reason);
            }
        }
        task_app.polling.remove(&task_sid);
    });
    text(StatusCode::OK, open.unwrap_or_default())
}

/// A GET: parked until the session has something to send.
async fn get(app: &App, sid: &str) -> Response<Body> {
    let Some(link) = app.polling.get(sid) else {
        return engine_error(SESSION_UNKNOWN);
    };
    if link.closed_by_client() {
        return last_poll(app, sid, &link);
    }
    let _in_flight = match link.rules.begin_get() {
        Ok(g) => g,
        Err(v) => return violation(app, sid, v),
    };
    let (tx, rx) = oneshot::channel();
    let sent = link.channels().cmds.send(PollCmd::Get(tx)).await.is_ok();
    // The writer answers within a ping interval (a ping is queued by then)
    // or when the session closes.
    let body = match sent {
        true => rx.await.ok(),
        false => None,
    };
    if link.closed_by_client() {
        // The poll the client's close ended.
        return last_poll(app, sid, &link);
    }
    match body {
        Some(body) => text(StatusCode::OK, body),
        None if sent => text(StatusCode::OK, Bytes::from_static(b"1")),
        None => engine_error(SESSION_UNKNOWN),
    }
}

/// A GET after the client's close: the one poll that close ended gets a
/// no-op (Engine.IO ends a pending poll so); any other finds the sid
/// forgotten.
fn last_poll(app: &App, sid: &str, link: &Link) -> Response<Body> {
    if link.take_last_poll() {
        return text(StatusCode::OK, Bytes::from_static(b"6"));
    }
    app.polling.remove(sid);
    engine_error(SESSION_UNKNOWN)
}

/// A POST: its packets go to the session, in order.
async fn post(app: &App, sid: &str, req: Request<Incoming>) -> Response<Body> {
    let Some(link) = app.polling.get(sid).filter(|l| !l.closed_by_client()) else {
        return engine_error(SESSION_UNKNOWN);
    };
    let _in_flight = match link.rules.begin_post() {
        Ok(g) => g,
        Err(v) => return violation(app, sid, v),
    };
    let max = app.config.max_frame_bytes;
    let collect = Limited::new(req.into_body(), max).collect();
    let Ok(collected) = tokio::time::timeout(BODY_READ_TIMEOUT, collect).await else {
        // Its packets are lost: the session cannot go on without them.
        crate::metrics::frame_rejected("timeout");
        tracing::warn!(
            timeout = ?BODY_READ_TIMEOUT,
            "a long-polling payload not received in time; closing the session"
        );
        close(app, sid);
        return engine_error(BAD_REQUEST);
    };
    let body = match collected {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            // Over maxPayload: the session is closed, as Engine.IO does.
            crate::metrics::frame_rejected("too_large");
            tracing::warn!(
                max,
                "a long-polling payload over maxPayload; closing the session"
            );
            close(app, sid);
            return engine_error(PAYLOAD_TOO_LARGE);
        }
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        crate::metrics::frame_rejected("decode");
        close(app, sid);
        return engine_error(BAD_REQUEST);
    };
    // Decoded one packet at a time as the session takes them (its input
    // channel is bounded): memory stays the body's own, whatever it holds.
    for p in engine::payload_packets(body) {
        let message = match p {
            Ok(Packet::Close) => {
                client_close(&link).await;
                break;
            }
            Ok(Packet::Binary(b)) => Message::Binary(b),
            Ok(p) => Message::Text(p.to_text().unwrap_or_default().into()),
            Err(_) => {
                crate::metrics::frame_rejected("decode");
                close(app, sid);
                return engine_error(BAD_REQUEST);
            }
        };
        if link.channels().input.send(Ok(message)).await.is_err() {
            return engine_error(SESSION_UNKNOWN);
        }
    }
    text(StatusCode::OK, Bytes::from_static(b"ok"))
}

/// The client's close (Engine.IO's `1`; what follows it in the payload is
/// dropped): from now on its sid takes no request but the one poll the
/// close ended, answered with a no-op (see [`last_poll`]); the writer
/// learns of it before the session ends for it.
async fn client_close(link: &Link) {
    link.close_by_client();
    let channels = link.channels();
    let _ = channels.cmds.send(PollCmd::ClientClosed).await;
    let close = Message::Text(Packet::Close.to_text().unwrap_or_default().into());
    let _ = channels.input.send(Ok(close)).await;
}

/// A request that broke the session's rules: refused, and the session is
/// closed when it was a concurrent request.
fn violation(app: &App, sid: &str, v: Violation) -> Response<Body> {
    // Counted as frames refused for breaking the transport's rules.
    crate::metrics::frame_rejected("protocol");
    if v == Violation::Concurrent {
        tracing::warn!("two long-polling requests of one kind at once; closing the session");
        close(app, sid);
    } else {
        tracing::debug!("a long-polling request after the upgrade; refused");
    }
    engine_error(BAD_REQUEST)
}

/// Closes a session that broke the rules: its sid is forgotten at once, and
/// its session ends (a request still in flight holds its link, so the end
/// is asked of its writer, not left to the link's drop).
fn close(app: &App, sid: &str) {
    if let Some(link) = app.polling.remove(sid) {
        // A session not started yet ends with its link.
        if let Some(channels) = link.started() {
            let _ = channels.cmds.try_send(PollCmd::Close);
        }
    }
}

/// A WebSocket naming a polling session: the upgrade. The client sends
/// `2probe` (answered `3probe`, and the parked GET gets a no-op so the
/// client stops polling), then `5`; from then on the session reads and
/// writes the WebSocket.
fn upgrade_session(app: Arc<App>, req: Request<Incoming>, sid: &str) -> Response<Body> {
    let Some(link) = app.polling.get(sid).filter(|l| !l.closed_by_client()) else {
        return engine_error(SESSION_UNKNOWN);
    };
    let hs = match Handshake::read(&req, Endpoint::SocketIo) {
        Ok(hs) => hs,
        Err(message) => {
            tracing::debug!(message, "a bad upgrade request");
            return engine_error(BAD_REQUEST);
        }
    };
    if link.rules.upgraded() {
        // Engine.IO accepts a WebSocket naming a session that upgraded
        // already and closes it at once; the session is not disturbed.
        tracing::debug!("a second WebSocket for an upgraded session; closed");
        return accept(&app, req, &hs, |_, stream, sink| {
            refuse_socket(stream, sink)
        });
    }
    accept(&app, req, &hs, move |app, stream, sink| async move {
        match tokio::time::timeout(UPGRADE_TIMEOUT, probe(&link, stream, sink)).await {
            Ok(Ok(stream)) => forward(&app, &link, stream).await,
            Ok(Err(why)) => tracing::debug!(why, "the upgrade did not complete"),
            Err(_) => tracing::debug!("the upgrade timed out"),
        }
    })
}

/// Closes an accepted WebSocket at once (1008, policy violation), and
/// reads what the client still sends (its close answer) so the close is
/// not cut by a reset; all within [`REFUSE_TIMEOUT`].
async fn refuse_socket(mut stream: Socket, mut sink: WriteHalf) {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        let mut burst = Burst::default();
        burst.push(
            Opcode::Close,
            close_payload(POLICY_VIOLATION, "session already upgraded"),
        );
        let _ = burst.write_to(&mut sink).await;
        let _ = sink.shutdown().await;
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// How long closing a refused WebSocket may take.
const REFUSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// WebSocket's close code for a request against the server's policy.
const POLICY_VIOLATION: u16 = 1008;

/// The probe and the upgrade packet; hands the write half to the session.
async fn probe(
    link: &Link,
    mut stream: Socket,
    mut sink: WriteHalf,
) -> Result<Socket, &'static str> {
    read_probe(&mut stream).await?;
    let mut burst = Burst::default();
    burst.push(Opcode::Text, Bytes::from_static(b"3probe"));
    burst
        .write_to(&mut sink)
        .await
        .map_err(|_| "probe answer failed")?;
    link.channels()
        .cmds
        .send(PollCmd::Probe)
        .await
        .map_err(|_| "session gone")?;
    read_upgrade(&mut stream).await?;
    if !link.rules.upgrade() {
        return Err("upgraded twice");
    }
    link.channels()
        .cmds
        .send(PollCmd::Upgrade(sink))
        .await
        .map_err(|_| "session gone")?;
    Ok(stream)
}

/// Feeds the upgraded WebSocket's messages to the session, until either
/// ends; the end of the socket ends the session.
async fn forward(app: &App, link: &Link, mut stream: Socket) {
    use futures_util::StreamExt;
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            msg = stream.next() => {
                let end = !matches!(msg, Some(Ok(_)));
                let msg = msg.unwrap_or(Err(WsError::ConnectionClosed));
                if link.channels().input.send(msg).await.is_err() || end {
                    return;
                }
            }
        }
    }
}
