//! Socket.IO for the frontends that already speak it (docs/protocol.md
//! section 10): Engine.IO v4 and Socket.IO v5 packets ([`engine`],
//! [`packet`]), usable without the rest of rtsync, and rtsync's session
//! over them ([`framing`]): a Socket.IO client's events are dispatched
//! exactly like the same `/ws` frames.
//!
//! One Engine.IO engine: the HTTP side ([`endpoint`]: handshake, polling
//! GETs and POSTs by [`polling`]'s rules, the upgrade) is generic over a
//! [`endpoint::Host`]; the sessions behind it read a `transport::Transport`
//! and write through an `outbox::Outbox`, with the shared [`heartbeat`].
//! rtsync's `/socket.io/` is one host (`http::socketio`); the standalone
//! layer ([`server`], no Redis) is another.
//!
//! Data flow: `GET /socket.io/?EIO=4&transport=websocket` → [`endpoint`] →
//! the WebSocket upgrade (`http::ws`) → `session::run` with
//! [`framing::SOCKETIO_JSON`]: the session sends Engine.IO's `open`,
//! answers CONNECT (checking a token in its `auth`), pings, and dispatches
//! every EVENT as a request whose ack id is the `rid`.

pub mod endpoint;
pub mod engine;
pub mod framing;
pub mod heartbeat;
pub mod packet;
pub mod polling;
pub mod route;
pub mod server;
