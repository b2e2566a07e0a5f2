//! Engine.IO's HTTP side (docs/protocol.md section 10), written once for
//! every server that speaks it: rtsync's `/socket.io/` (`http::socketio`)
//! and the standalone layer's endpoints ([`super::server`]). What differs
//! between them is behind a small [`Host`]: the sessions it runs, its
//! limits and its task tracker.
//!
//! ```text
//! HTTP request ──Route──▶ endpoint ──Link (polling::Registry)──▶ session
//!   handshake: Host::open_polling (the host's task waits for the first
//!              poll, then runs its session on a Transport)
//!   GET:       PollCmd::Get ──▶ the outbox's polling writer (run_polling)
//!   POST:      Engine.IO packets ──▶ the session's input channel
//!   WebSocket: no sid ──▶ Host::accept_websocket
//!              a sid  ──▶ the upgrade: 2probe/3probe, 5, the write half
//!                         to the writer, the read half fed to the input
//! ```
//!
//! Long-polling (`transport=polling`): the handshake GET opens a session,
//! then GETs and POSTs name its `sid`. WebSocket (`transport=websocket`):
//! a new connection, or, with a `sid`, the upgrade of a polling session.
//! Errors are Engine.IO's: HTTP 400 `{"code", "message"}`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{self, Packet};
use super::polling::{
    read_probe, read_upgrade, Link, Registry, Started, Violation, UPGRADE_TIMEOUT,
};
use super::route::{
    cors, engine_error, preflight, text, Route, BAD_REQUEST, PAYLOAD_TOO_LARGE, SESSION_UNKNOWN,
};
use crate::outbox::long_poll::{PollCmd, PollFormat};
use crate::outbox::wire_writer::{close_payload, Burst, Opcode};
use crate::transport::socket::{Socket, WriteHalf};
use crate::transport::{Input, Output, Transport};

/// An HTTP answer.
pub type Body = Full<Bytes>;

/// How long a POST's body may take to arrive.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-socket read buffer: enough for typical client frames (larger ones
/// grow it as needed, read this much per call); kept small because idle
/// connections each hold one.
const READ_BUFFER: usize = 512;

/// What a server gives its Engine.IO endpoint.
pub trait Host: Send + Sync + Sized + 'static {
    /// Its long-polling sessions, by sid.
    fn registry(&self) -> &Registry;
    /// Origins allowed to poll from another origin (`*` for any).
    fn cors_origins(&self) -> &[String];
    /// The largest polling body or WebSocket message, each way.
    fn max_payload(&self) -> usize;
    /// Owns every task the endpoint spawns.
    fn tasks(&self) -> &TaskTracker;
    /// Ends forwarding on shutdown.
    fn shutdown(&self) -> &CancellationToken;
    /// HTTP 503 when the server takes no more sessions.
    fn at_capacity(&self) -> Option<Response<Body>>;
    /// Opens the polling session `sid` (its link is registered): its task
    /// waits on `start` for the first poll or upgrade, then runs the
    /// session on [`polling_transport`]; the sid is forgotten when it ends
    /// (or never starts). Returns the `open` packet.
    fn open_polling(
        self: &Arc<Self>,
        sid: &str,
        peer: IpAddr,
        start: oneshot::Receiver<Started>,
    ) -> Bytes;
    /// A new WebSocket with no sid: its own session (see [`accept`]).
    fn accept_websocket(self: &Arc<Self>, req: Request<Incoming>, peer: IpAddr) -> Response<Body>;
    /// The compression of a WebSocket that offered `permessage-deflate`
    /// (none: the offer is declined).
    fn deflate(&self) -> Option<crate::compression::Deflate> {
        None
    }
    /// A polling POST's body as the client meant it: inflated when it came
    /// with a `Content-Encoding`, never past [`Host::max_payload`] inflated
    /// bytes. By default only a body without a coding is taken.
    fn decode_body(
        &self,
        headers: &HeaderMap,
        body: Bytes,
    ) -> impl std::future::Future<Output = Result<Bytes, BodyRefused>> + Send {
        let coded = headers.contains_key(hyper::header::CONTENT_ENCODING);
        async move {
            if coded {
                return Err(BodyRefused::Malformed(
                    "Content-Encoding is not supported here".to_owned(),
                ));
            }
            Ok(body)
        }
    }
}

/// Why a polling POST's encoded body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyRefused {
    /// It inflates past the largest payload.
    #[error("the body inflates past {0} bytes")]
    TooLarge(usize),
    /// An unknown coding, or bytes that do not inflate.
    #[error("{0}")]
    Malformed(String),
}

/// Answers one request of the endpoint, with CORS headers.
pub async fn serve<H: Host>(host: Arc<H>, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
    // A copy: a header value shares the bytes hyper read the request into,
    // which a parked GET would otherwise keep (and hyper would read the
    // next request into a second buffer).
    let origin = req
        .headers()
        .get(hyper::header::ORIGIN)
        .and_then(|o| HeaderValue::from_bytes(o.as_bytes()).ok());
    let mut response = route(&host, req, peer).await;
    cors(host.cors_origins(), origin.as_ref(), &mut response);
    response
}

async fn route<H: Host>(host: &Arc<H>, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
    match Route::of(req.method(), req.uri().query()) {
        Ok(Route::Preflight) => preflight(),
        Ok(Route::Handshake) => handshake(host, peer),
        Ok(Route::Get(sid)) => {
            // A GET may be parked for a ping interval: it holds nothing of
            // the request (see `serve`), and only its own small future.
            drop(req);
            Box::pin(get(&**host, &sid)).await
        }
        Ok(Route::Post(sid)) => Box::pin(post(&**host, &sid, req)).await,
        Ok(Route::WebSocket(None)) => host.accept_websocket(req, peer),
        Ok(Route::WebSocket(Some(sid))) => upgrade_session(&**host, req, &sid),
        Err(e) => engine_error(e),
    }
}

/// The first GET: registers a session and answers with Engine.IO's
/// `open`; the host runs the session once the client polls or upgrades.
fn handshake<H: Host>(host: &Arc<H>, peer: IpAddr) -> Response<Body> {
    if let Some(full) = host.at_capacity() {
        return full;
    }
    let sid = host.registry().new_sid();
    let (start_tx, start_rx) = oneshot::channel();
    host.registry()
        .insert(sid.clone(), Arc::new(Link::new(start_tx)));
    let open = host.open_polling(&sid, peer, start_rx);
    text(StatusCode::OK, open)
}

/// A started polling session's transport: its input is what the POSTs
/// (and, after an upgrade, the WebSocket) deliver; its output answers the
/// GETs with bodies of at most `max_payload` bytes.
pub fn polling_transport(started: Started, sid: String, max_payload: usize) -> Transport {
    Transport {
        input: Input::Channel(started.input),
        output: Output::Polling {
            cmds: started.cmds,
            format: PollFormat {
                separator: engine::SEPARATOR as u8,
                noop: Bytes::from_static(b"6"),
                close: Bytes::from_static(b"1"),
                max_payload,
            },
        },
        engine_sid: Some(sid),
        deflate: None,
    }
}

/// A GET: parked until the session has something to send.
async fn get<H: Host>(host: &H, sid: &str) -> Response<Body> {
    let Some(link) = host.registry().get(sid) else {
        return engine_error(SESSION_UNKNOWN);
    };
    if link.closed_by_client() {
        return last_poll(host, sid, &link);
    }
    // Boxed (rare, and its timer would make every parked GET larger).
    Box::pin(link.settle_upgrade()).await;
    let _in_flight = match link.rules.begin_get() {
        Ok(g) => g,
        Err(v) => return violation(host, sid, v),
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
        return last_poll(host, sid, &link);
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
fn last_poll<H: Host>(host: &H, sid: &str, link: &Link) -> Response<Body> {
    if link.take_last_poll() {
        return text(StatusCode::OK, Bytes::from_static(b"6"));
    }
    host.registry().remove(sid);
    engine_error(SESSION_UNKNOWN)
}

/// A POST: its packets go to the session, in order.
async fn post<H: Host>(host: &H, sid: &str, req: Request<Incoming>) -> Response<Body> {
    let Some(link) = host.registry().get(sid).filter(|l| !l.closed_by_client()) else {
        return engine_error(SESSION_UNKNOWN);
    };
    let _in_flight = match link.rules.begin_post() {
        Ok(g) => g,
        Err(v) => return violation(host, sid, v),
    };
    let body = match read_body(host, sid, req).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        crate::metrics::frame_rejected(crate::metrics::FrameRejected::Decode);
        close(host, sid);
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
                crate::metrics::frame_rejected(crate::metrics::FrameRejected::Decode);
                close(host, sid);
                return engine_error(BAD_REQUEST);
            }
        };
        if link.channels().input.send(Ok(message)).await.is_err() {
            return engine_error(SESSION_UNKNOWN);
        }
    }
    text(StatusCode::OK, Bytes::from_static(b"ok"))
}

/// A POST's body, within maxPayload and [`BODY_READ_TIMEOUT`]; a body
/// over either closes the session (its packets are lost: the session
/// cannot go on without them).
async fn read_body<H: Host>(
    host: &H,
    sid: &str,
    req: Request<Incoming>,
) -> Result<Bytes, Response<Body>> {
    let max = host.max_payload();
    let (parts, body) = req.into_parts();
    let collect = Limited::new(body, max).collect();
    let Ok(collected) = tokio::time::timeout(BODY_READ_TIMEOUT, collect).await else {
        crate::metrics::frame_rejected(crate::metrics::FrameRejected::Timeout);
        tracing::warn!(
            timeout = ?BODY_READ_TIMEOUT,
            "a long-polling payload not received in time; closing the session"
        );
        close(host, sid);
        return Err(engine_error(BAD_REQUEST));
    };
    match collected {
        Ok(b) => decoded(host, sid, &parts.headers, b.to_bytes()).await,
        Err(_) => {
            // Over maxPayload: the session is closed, as Engine.IO does.
            crate::metrics::frame_rejected(crate::metrics::FrameRejected::TooLarge);
            tracing::warn!(
                max,
                "a long-polling payload over maxPayload; closing the session"
            );
            close(host, sid);
            Err(engine_error(PAYLOAD_TOO_LARGE))
        }
    }
}

/// A POST's body inflated as its `Content-Encoding` says (see
/// [`Host::decode_body`]); a body refused closes the session, as one over
/// maxPayload does.
async fn decoded<H: Host>(
    host: &H,
    sid: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Bytes, Response<Body>> {
    if !headers.contains_key(hyper::header::CONTENT_ENCODING) {
        return Ok(body);
    }
    match host.decode_body(headers, body).await {
        Ok(body) => Ok(body),
        Err(e) => {
            crate::metrics::http_body_refused();
            tracing::warn!(error = %e, "a long-polling payload refused for its Content-Encoding; closing the session");
            close(host, sid);
            Err(engine_error(match e {
                BodyRefused::TooLarge(_) => PAYLOAD_TOO_LARGE,
                BodyRefused::Malformed(_) => BAD_REQUEST,
            }))
        }
    }
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
fn violation<H: Host>(host: &H, sid: &str, v: Violation) -> Response<Body> {
    // Counted as frames refused for breaking the transport's rules.
    crate::metrics::frame_rejected(crate::metrics::FrameRejected::Protocol);
    if v == Violation::Concurrent {
        tracing::warn!("two long-polling requests of one kind at once; closing the session");
        close(host, sid);
    } else {
        tracing::debug!("a long-polling request after the upgrade; refused");
    }
    engine_error(BAD_REQUEST)
}

/// Closes a session that broke the rules: its sid is forgotten at once, and
/// its session ends (a request still in flight holds its link, so the end
/// is asked of its writer, not left to the link's drop).
fn close<H: Host>(host: &H, sid: &str) {
    if let Some(link) = host.registry().remove(sid) {
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
fn upgrade_session<H: Host>(host: &H, req: Request<Incoming>, sid: &str) -> Response<Body> {
    let Some(link) = host.registry().get(sid).filter(|l| !l.closed_by_client()) else {
        return engine_error(SESSION_UNKNOWN);
    };
    let key = match crate::upgrade::accept_key(req.headers()) {
        Ok(key) => key,
        Err(message) => {
            tracing::debug!(message, "a bad upgrade request");
            return engine_error(BAD_REQUEST);
        }
    };
    let (tasks, max) = (host.tasks(), host.max_payload());
    let offers = req
        .headers()
        .get_all(hyper::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let deflate = host
        .deflate()
        .filter(|_| crate::compression::negotiate(offers));
    if !link.begin_upgrade() {
        // Engine.IO accepts a WebSocket naming a session that upgraded
        // (or is upgrading) already and closes it at once; the session is
        // not disturbed.
        tracing::debug!("a second WebSocket for an upgraded session; closed");
        return accept(tasks, max, req, &key, None, false, refuse_socket);
    }
    let shutdown = host.shutdown().clone();
    accept(
        tasks,
        max,
        req,
        &key,
        None,
        deflate.is_some(),
        move |stream, sink| async move {
            let probed = probe(&link, stream, sink, deflate);
            match tokio::time::timeout(UPGRADE_TIMEOUT, probed).await {
                Ok(Ok(stream)) => return forward(&shutdown, &link, stream).await,
                Ok(Err(why)) => tracing::debug!(why, "the upgrade did not complete"),
                Err(_) => tracing::debug!("the upgrade timed out"),
            }
            link.upgrade_failed();
        },
    )
}

/// Answers `101 Switching Protocols` to a checked upgrade request (its
/// `Sec-WebSocket-Accept` and subprotocol given) and runs `then` on the
/// upgraded socket (tungstenite's reading side, with `max_message` as its
/// message limit, and the write half), as a task of `tasks`. With
/// `deflate`, the answer accepts `permessage-deflate` (see
/// [`crate::compression`]) and compressed client messages are inflated
/// within `max_message`.
#[allow(clippy::too_many_arguments)]
pub fn accept<F, Fut>(
    tasks: &TaskTracker,
    max_message: usize,
    mut req: Request<Incoming>,
    accept_key: &str,
    protocol: Option<&'static str>,
    deflate: bool,
    then: F,
) -> Response<Body>
where
    F: FnOnce(Socket, WriteHalf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Tungstenite only reads (the session's writer writes frames itself,
    // see `transport::socket`), so only its read side is configured.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let inflate = deflate.then_some(max_message);
                let (stream, sink) =
                    crate::transport::socket::split(upgraded, config, inflate).await;
                then(stream, sink).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(accept_key) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    if deflate {
        h.insert(
            hyper::header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static(crate::compression::ANSWER),
        );
    }
    response
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
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// WebSocket's close code for a request against the server's policy.
const POLICY_VIOLATION: u16 = 1008;

/// The probe and the upgrade packet; hands the write half to the session.
async fn probe(
    link: &Link,
    mut stream: Socket,
    mut sink: WriteHalf,
    deflate: Option<crate::compression::Deflate>,
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
    if !link.complete_upgrade() {
        return Err("upgraded twice");
    }
    link.channels()
        .cmds
        .send(PollCmd::Upgrade(sink, deflate))
        .await
        .map_err(|_| "session gone")?;
    Ok(stream)
}

/// Feeds the upgraded WebSocket's messages to the session, until either
/// ends; the end of the socket ends the session.
async fn forward(shutdown: &CancellationToken, link: &Link, mut stream: Socket) {
    use futures_util::StreamExt;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
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
