//! The WebSocket upgrade at `/ws`: validates the handshake, negotiates the
//! subprotocol, answers `101 Switching Protocols`, and runs the session on
//! the upgraded socket, split into tungstenite's reading side (a small read
//! buffer, `RTS_MAX_FRAME_BYTES` as the message limit) and the writer's
//! write half.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Request, Response};

use super::json_io::{json_error, Body};
use crate::app::App;
use crate::protocol::{Encoding, ErrorCode, Framing, WsFraming};
use crate::transport::socket::{Socket, WriteHalf};

/// Offered subprotocols that carry a token instead of naming an encoding
/// (`rtsync.token.<JWT>`): a browser cannot set an `Authorization` header,
/// but it can offer subprotocols. Never echoed back.
const TOKEN_PROTOCOL: &str = "rtsync.token.";

/// Which endpoint an upgrade is for: its framing follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`: the encoding is the negotiated subprotocol's.
    Ws,
    /// `/socket.io/` with `transport=websocket`.
    SocketIo,
}

pub fn upgrade(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: IpAddr,
    endpoint: Endpoint,
) -> Response<Body> {
    if let Some(full) = at_capacity(&app) {
        return full;
    }
    // Connections still waiting to authenticate have their own caps, kept
    // by closing the oldest waiting one (see `crate::waiting`), never by
    // refusing a new user here.
    let hs = match Handshake::read(&req, endpoint) {
        Ok(hs) => hs,
        Err(message) => return json_error(ErrorCode::BadRequest, message),
    };
    let (encoding, token) = (hs.encoding, hs.token.clone());
    let deflate = app.config.deflate(hs.deflate_offered);
    accept(
        &app,
        req,
        &hs,
        deflate.is_some(),
        // Not an `async` block: the socket goes into the session's box at
        // once, so the connection's task does not keep a copy of it.
        move |app, stream, sink| {
            let framing: &'static dyn Framing = match endpoint {
                Endpoint::Ws => WsFraming::of(encoding),
                Endpoint::SocketIo => &crate::socketio::framing::SOCKETIO_JSON,
            };
            let transport = crate::transport::Transport {
                input: crate::transport::Input::Ws(Box::new(stream)),
                output: crate::transport::Output::Ws(sink),
                engine_sid: None,
                deflate,
            };
            crate::session::run(app, transport, framing, token, peer)
        },
    )
}

/// Answers `101 Switching Protocols` to a checked upgrade request and runs
/// `then` on the upgraded socket (tungstenite's reading side, and the write
/// half), as a task of the app (see [`crate::socketio::endpoint::accept`]);
/// with `deflate`, `permessage-deflate` is accepted.
pub fn accept<F, Fut>(
    app: &Arc<App>,
    req: Request<Incoming>,
    hs: &Handshake,
    deflate: bool,
    then: F,
) -> Response<Body>
where
    F: FnOnce(Arc<App>, Socket, WriteHalf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let task_app = app.clone();
    crate::socketio::endpoint::accept(
        &app.tasks,
        app.config.max_frame_bytes.get(),
        req,
        &hs.accept,
        hs.protocol,
        deflate,
        move |stream, sink| then(task_app, stream, sink),
    )
}

/// What an upgrade request asks for, once checked (RFC 6455 4.2.1).
pub struct Handshake {
    /// `Sec-WebSocket-Accept` of its key.
    accept: String,
    encoding: Encoding,
    /// The subprotocol answered (the encoding's), if one was offered.
    protocol: Option<&'static str>,
    /// A JWT in `Authorization`, `?token=` or a `rtsync.token.` subprotocol.
    token: Option<String>,
    /// Whether `Sec-WebSocket-Extensions` offers a `permessage-deflate`
    /// rtsync can accept ([`crate::compression::negotiate`]).
    pub deflate_offered: bool,
}

impl Handshake {
    pub fn read(req: &Request<Incoming>, endpoint: Endpoint) -> Result<Handshake, &'static str> {
        let headers = req.headers();
        let accept = crate::upgrade::accept_key(headers)?;
        let offered = headers
            .get(SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok());
        let offered: Vec<&str> = offered
            .map(|o| o.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let protocol_token = offered
            .iter()
            .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL))
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        let encodings: Vec<&str> = offered
            .iter()
            .copied()
            .filter(|p| !p.starts_with(TOKEN_PROTOCOL))
            .collect();
        let encodings = encodings.join(",");
        let encodings = Some(encodings.as_str()).filter(|o| !o.is_empty());
        let (encoding, protocol) = match endpoint {
            Endpoint::Ws => Encoding::negotiate(encodings)
                .ok_or("unsupported subprotocol; offer rtsync.v1.msgpack or rtsync.v1.json")?,
            // Socket.IO names no subprotocol; its framing fixes the encoding.
            Endpoint::SocketIo => (Encoding::Json, None),
        };
        let token = bearer(headers.get(AUTHORIZATION))
            .or_else(|| query_token(req.uri().query()))
            .or(protocol_token);
        let deflate_offered = crate::compression::negotiate(
            headers
                .get_all(hyper::header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        Ok(Handshake {
            accept,
            encoding,
            protocol,
            token,
            deflate_offered,
        })
    }
}

/// HTTP 503 when the sidecar holds `RTS_MAX_CONNECTIONS` connections
/// (WebSockets and long-polling sessions alike).
pub fn at_capacity(app: &App) -> Option<Response<Body>> {
    let open = app.connections.load(std::sync::atomic::Ordering::Relaxed);
    (open >= app.config.max_connections.get()).then(|| {
        refuse(
            crate::metrics::ConnectionRefused::SidecarFull,
            "RTS_MAX_CONNECTIONS",
            app.config.max_connections.get(),
            "this sidecar is at its connection limit; try another",
        )
    })
}

/// HTTP 503 at upgrade for a connection limit: counted and logged.
fn refuse(
    reason: crate::metrics::ConnectionRefused,
    setting: &str,
    limit: usize,
    message: &str,
) -> Response<Body> {
    crate::metrics::connection_refused(reason);
    tracing::warn!(limit, "connection refused: {setting} reached");
    json_error(ErrorCode::Unavailable, message)
}

fn bearer(value: Option<&HeaderValue>) -> Option<String> {
    let v = value?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty())
}
