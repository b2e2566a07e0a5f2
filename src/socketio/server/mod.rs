//! A standalone Engine.IO v4 / Socket.IO v5 server, with no Redis and no
//! rtsync session behind it: the layer the conformance server
//! (`examples/socketio_conformance.rs`) runs on, and the way to check our
//! Engine.IO and Socket.IO packets against the protocols' own rules.
//!
//! It runs on the same engine as rtsync's `/socket.io/`: the HTTP side is
//! [`super::endpoint`] (this [`Server`] is its [`Host`]), a session reads
//! its client from a [`Transport`]'s input and writes through an
//! [`Outbox`](crate::outbox::Outbox) and its writers (`run` on a
//! WebSocket, `run_polling` answering GETs, handing over on the upgrade),
//! with Engine.IO's shared [`heartbeat`](super::heartbeat). Only what sits
//! behind a session differs: an application given a [`Conn`].
//!
//! ```text
//! HTTP request ──▶ endpoint ──▶ Transport.input ──▶ Session::run ──Frame──▶ Conn.incoming
//! client ◀── run / run_polling ◀── Outbox ◀── Session::run ◀──Frame── Conn.outgoing
//!                                   (the application: e.g. namespaces::run and its Handler)
//! ```

pub mod namespaces;
pub mod session;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::endpoint::{self, polling_transport, Body, Host};
use super::framing::SOCKETIO_JSON;
use super::heartbeat::Heartbeat;
use super::polling::{Registry, Started};
use super::route::{engine_error, text, BAD_REQUEST};
use crate::protocol::Framing;
use crate::transport::{Input, Output, Transport};
pub use session::{Conn, Frame};

/// The server's settings, sent to clients in the handshake.
#[derive(Debug, Clone)]
pub struct Config {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// The largest polling body or WebSocket message, each way.
    pub max_payload: usize,
    /// Origins allowed to poll from another origin (`*` for any).
    pub cors_origins: Vec<String>,
    /// Sessions held at once; more are refused with HTTP 503.
    pub max_sessions: usize,
    /// A pause after each WebSocket message. Node's engine.io sends a
    /// session's next packets only once the previous write completed, so
    /// two packets of one moment (a CONNECT's answer and the first event)
    /// reach a client in two reads; the protocols' test suites read one
    /// message per event-loop turn and lose the second otherwise. `None`
    /// (the default) writes at once.
    pub message_pacing: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            cors_origins: Vec::new(),
            max_sessions: 10_000,
            message_pacing: None,
        }
    }
}

/// What runs behind each session, given its [`Conn`]; the session ends
/// when it returns (or drops the `Conn`).
pub type Application = Arc<dyn Fn(Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One Engine.IO endpoint (e.g. `/engine.io/` or `/socket.io/`).
pub struct Server {
    config: Config,
    application: Application,
    /// Its polling sessions, by sid (WebSocket-only sessions have none).
    polling: Registry,
    /// Sessions open now, of either transport.
    open: AtomicUsize,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Server {
    /// A server whose sessions run `application`; their tasks are tracked
    /// by `tasks` and end with `shutdown`.
    pub fn new<F, Fut>(
        config: Config,
        application: F,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Server>
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let application: Application = Arc::new(move |conn| Box::pin(application(conn)));
        Arc::new(Server {
            config,
            application,
            polling: Registry::default(),
            open: AtomicUsize::new(0),
            tasks,
            shutdown,
        })
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Answers one HTTP request of the endpoint.
    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        // The peer's address is not used by this server.
        endpoint::serve(self.clone(), req, IpAddr::V4(Ipv4Addr::UNSPECIFIED)).await
    }

    /// The `open` packet of session `sid`, as rtsync's sessions make it.
    fn open_packet(&self, sid: &str, upgrades: bool) -> Bytes {
        let heartbeat = crate::protocol::framing::Heartbeat {
            interval: self.config.ping_interval,
            timeout: self.config.ping_timeout,
            max_payload: self.config.max_payload,
            upgrades,
        };
        SOCKETIO_JSON.opening(sid, &heartbeat).unwrap_or_default()
    }

    /// Runs one session and its application to their end; `open`, if
    /// given, is its first message.
    async fn run(&self, sid: String, transport: Transport, opened: Instant, open: Option<Bytes>) {
        let (conn, session) = session::Session::new(self.config.clone(), sid, opened);
        if let Some(open) = open {
            session.first(open);
        }
        let application = (self.application)(conn);
        let session = session.run(transport, &self.tasks, &self.shutdown, &self.polling);
        tokio::join!(session, application);
    }

    /// A polling session's task: waits for the first poll (at most until
    /// the client could have answered the first ping), then runs it.
    async fn run_polling(
        self: Arc<Self>,
        sid: String,
        start: oneshot::Receiver<Started>,
        opened: Instant,
    ) {
        let silent = Heartbeat::new(self.config.ping_interval, self.config.ping_timeout, opened)
            .silent_deadline();
        let started = tokio::select! {
            started = start => started.ok(),
            () = tokio::time::sleep_until(silent) => None,
            () = self.shutdown.cancelled() => None,
        };
        if let Some(started) = started {
            let transport = polling_transport(started, sid.clone(), self.config.max_payload);
            self.run(sid.clone(), transport, opened, None).await;
        }
        self.polling.remove(&sid);
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Host for Server {
    fn registry(&self) -> &Registry {
        &self.polling
    }

    fn cors_origins(&self) -> &[String] {
        &self.config.cors_origins
    }

    fn max_payload(&self) -> usize {
        self.config.max_payload
    }

    fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn at_capacity(&self) -> Option<Response<Body>> {
        (self.sessions() >= self.config.max_sessions).then(|| {
            tracing::warn!(
                max = self.config.max_sessions,
                "Engine.IO session limit reached"
            );
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(b"too many sessions"),
            )
        })
    }

    fn open_polling(
        self: &Arc<Self>,
        sid: &str,
        _peer: IpAddr,
        start: oneshot::Receiver<Started>,
    ) -> Bytes {
        self.open.fetch_add(1, Ordering::AcqRel);
        let opened = Instant::now();
        self.tasks
            .spawn(self.clone().run_polling(sid.to_owned(), start, opened));
        self.open_packet(sid, true)
    }

    fn accept_websocket(self: &Arc<Self>, req: Request<Incoming>, _peer: IpAddr) -> Response<Body> {
        if let Some(full) = self.at_capacity() {
            return full;
        }
        let Ok(key) = crate::upgrade::accept_key(req.headers()) else {
            return engine_error(BAD_REQUEST);
        };
        let server = self.clone();
        let max = self.config.max_payload;
        endpoint::accept(
            &self.tasks,
            max,
            req,
            &key,
            None,
            false,
            move |stream, sink| {
                server.open.fetch_add(1, Ordering::AcqRel);
                async move {
                    let sid = server.polling.new_sid();
                    let transport = Transport {
                        input: Input::Ws(Box::new(stream)),
                        output: Output::Ws(sink),
                        engine_sid: None,
                        deflate: None,
                    };
                    // A WebSocket-only session's `open` is its first message.
                    let open = server.open_packet(&sid, false);
                    server.run(sid, transport, Instant::now(), Some(open)).await;
                    server.open.fetch_sub(1, Ordering::AcqRel);
                }
            },
        )
    }
}
