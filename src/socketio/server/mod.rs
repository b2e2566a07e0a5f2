//! A standalone Engine.IO v4 / Socket.IO v5 server, with no Redis and no
//! rtsync session behind it: the layer the conformance server
//! (`examples/socketio_conformance.rs`) runs on, and the way to check our
//! Engine.IO and Socket.IO packets against the protocols' own rules.
//!
//! ```text
//! HTTP request ──Route──▶ Server ──Cmd──▶ session::Driver ◀──▶ Conn ──▶ application
//!                                                              (e.g. namespaces::run
//!                                                               and its Handler)
//! ```
//!
//! [`Server::handle`] answers one HTTP request: a polling handshake opens a
//! session (a [`session::Driver`] task and its application's [`Conn`]),
//! GETs and POSTs go to it by `sid`, a WebSocket opens one or upgrades a
//! polling one. The polling rules ([`crate::socketio::polling::Rules`]) and
//! the HTTP answers ([`crate::socketio::route`]) are the ones rtsync's own
//! `/socket.io/` uses; only what sits behind a session differs.

pub mod namespaces;
pub mod session;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine;
use super::polling::{read_probe, read_upgrade, Registry, Rules, Violation, UPGRADE_TIMEOUT};
use super::route::{
    cors, engine_error, preflight, text, Route, BAD_REQUEST, PAYLOAD_TOO_LARGE, SESSION_UNKNOWN,
};
use session::{Cmd, Driver, Ws};
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

/// A session as the HTTP side reaches it.
struct Link {
    cmds: mpsc::Sender<Cmd>,
    rules: Rules,
    /// Set while a WebSocket is upgrading the session.
    upgrading: std::sync::atomic::AtomicBool,
    /// Told when the upgrade completes.
    upgraded: tokio::sync::Notify,
}

/// How long a GET that comes while an upgrade is in progress waits for
/// it: the client may have sent `5` already on its WebSocket, which a
/// single-threaded server would have read first.
const UPGRADE_SETTLE: Duration = Duration::from_millis(100);

/// Commands queued for one session's driver.
const CMD_QUEUE: usize = 16;

type Answer = Response<Full<Bytes>>;

/// One Engine.IO endpoint (e.g. `/engine.io/` or `/socket.io/`).
pub struct Server {
    config: Config,
    application: Application,
    sessions: Registry<Link>,
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
            sessions: Registry::default(),
            tasks,
            shutdown,
        })
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Answers one HTTP request of the endpoint.
    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Answer {
        let origin = req.headers().get(hyper::header::ORIGIN).cloned();
        let mut answer = match Route::of(req.method(), req.uri().query()) {
            Ok(Route::Preflight) => preflight(),
            Ok(Route::Handshake) => self.handshake().await,
            Ok(Route::Get(sid)) => self.get(&sid).await,
            Ok(Route::Post(sid)) => self.post(&sid, req).await,
            Ok(Route::WebSocket(sid)) => self.websocket(req, sid),
            Err(e) => engine_error(e),
        };
        cors(&self.config.cors_origins, origin.as_ref(), &mut answer);
        answer
    }

    fn full(&self) -> Option<Answer> {
        (self.sessions.len() >= self.config.max_sessions).then(|| {
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

    /// Starts a session's driver and application; the session is
    /// forgotten when both ended.
    fn open(self: &Arc<Self>, ws: Option<Ws>) -> String {
        let sid = self.sessions.new_sid();
        let (cmds, cmd_rx) = mpsc::channel(CMD_QUEUE);
        let link = Arc::new(Link {
            cmds,
            rules: Rules::default(),
            upgrading: Default::default(),
            upgraded: tokio::sync::Notify::new(),
        });
        if ws.is_some() {
            link.rules.upgrade();
        }
        self.sessions.insert(sid.clone(), link);
        let (driver, conn) = Driver::new(self.config.clone(), sid.clone(), cmd_rx, ws);
        let server = self.clone();
        let task_sid = sid.clone();
        self.tasks.spawn(async move {
            let application = (server.application)(conn);
            tokio::join!(driver.run(server.shutdown.clone()), application);
            server.sessions.remove(&task_sid);
        });
        sid
    }

    async fn handshake(self: &Arc<Self>) -> Answer {
        if let Some(full) = self.full() {
            return full;
        }
        let sid = self.open(None);
        self.get(&sid).await
    }

    /// A GET: parked until the session has something to send (a ping
    /// comes within a ping interval).
    async fn get(&self, sid: &str) -> Answer {
        let Some(link) = self.sessions.get(sid) else {
            return engine_error(SESSION_UNKNOWN);
        };
        if link.upgrading.load(std::sync::atomic::Ordering::Acquire) && !link.rules.upgraded() {
            let settled = link.upgraded.notified();
            let _ = tokio::time::timeout(UPGRADE_SETTLE, settled).await;
        }
        let _in_flight = match link.rules.begin_get() {
            Ok(g) => g,
            Err(v) => return self.violation(sid, &link, v),
        };
        let (tx, rx) = oneshot::channel();
        if link.cmds.send(Cmd::Get(tx)).await.is_err() {
            return engine_error(SESSION_UNKNOWN);
        }
        // A session that ended without answering is gone.
        match rx.await {
            Ok(body) => text(StatusCode::OK, body),
            Err(_) => engine_error(SESSION_UNKNOWN),
        }
    }

    /// A POST: its packets go to the session in order.
    async fn post(&self, sid: &str, req: Request<Incoming>) -> Answer {
        let Some(link) = self.sessions.get(sid) else {
            return engine_error(SESSION_UNKNOWN);
        };
        let _in_flight = match link.rules.begin_post() {
            Ok(g) => g,
            Err(v) => return self.violation(sid, &link, v),
        };
        let body = match Limited::new(req.into_body(), self.config.max_payload)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                tracing::warn!("a polling payload over maxPayload; closing the session");
                self.close(sid);
                return engine_error(PAYLOAD_TOO_LARGE);
            }
        };
        let Ok(body) = std::str::from_utf8(&body) else {
            tracing::debug!("a polling payload that is not UTF-8; closing the session");
            self.close(sid);
            return engine_error(BAD_REQUEST);
        };
        // One packet at a time, as the session takes them.
        for p in engine::payload_packets(body) {
            let Ok(p) = p else {
                tracing::debug!("a polling payload that is not Engine.IO's; closing the session");
                self.close(sid);
                return engine_error(BAD_REQUEST);
            };
            // The client's close: its sid is forgotten at once, so a GET
            // after this POST is refused (the parked one gets a no-op).
            if p == engine::Packet::Close {
                self.sessions.remove(sid);
            }
            if link.cmds.send(Cmd::Packet(p)).await.is_err() {
                return engine_error(SESSION_UNKNOWN);
            }
        }
        text(StatusCode::OK, Bytes::from_static(b"ok"))
    }

    fn violation(&self, sid: &str, link: &Link, v: Violation) -> Answer {
        if v == Violation::Concurrent {
            tracing::debug!("two polling requests of one kind at once; closing the session");
            let _ = link.cmds.try_send(Cmd::Close);
            self.sessions.remove(sid);
        }
        engine_error(BAD_REQUEST)
    }

    /// Ends a session that broke the rules; its sid is forgotten at once.
    fn close(&self, sid: &str) {
        if let Some(link) = self.sessions.remove(sid) {
            let _ = link.cmds.try_send(Cmd::Close);
        }
    }

    /// `transport=websocket`: a new session, or the upgrade of the polling
    /// session `sid` (`2probe` → `3probe`, the parked GET gets a no-op,
    /// then `5`).
    fn websocket(self: &Arc<Self>, mut req: Request<Incoming>, sid: Option<String>) -> Answer {
        // A WebSocket naming a session that upgraded already, or is
        // upgrading on another socket, is accepted and closed at once (the
        // protocol's rule: it is ignored).
        let mut superfluous = false;
        let link = match &sid {
            Some(sid) => match self.sessions.get(sid) {
                Some(link)
                    if link.rules.upgraded()
                        || link
                            .upgrading
                            .swap(true, std::sync::atomic::Ordering::AcqRel) =>
                {
                    superfluous = true;
                    None
                }
                Some(link) => Some(link),
                None => return engine_error(SESSION_UNKNOWN),
            },
            None => {
                if let Some(full) = self.full() {
                    return full;
                }
                None
            }
        };
        let Ok(accept) = crate::upgrade::accept_key(req.headers()) else {
            return engine_error(BAD_REQUEST);
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.config.max_payload))
            .max_frame_size(Some(self.config.max_payload));
        let server = self.clone();
        self.tasks.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket upgrade failed");
                    return;
                }
            };
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            match link {
                None if superfluous => {
                    let mut ws = ws;
                    let _ = tokio::time::timeout(UPGRADE_TIMEOUT, ws.close(None)).await;
                }
                None => {
                    server.open(Some(ws));
                }
                Some(link) => {
                    let done = tokio::time::timeout(UPGRADE_TIMEOUT, probe(&link, ws)).await;
                    match done {
                        Ok(Ok(())) => return,
                        Ok(Err(why)) => tracing::debug!(why, "the upgrade did not complete"),
                        Err(_) => tracing::debug!("the upgrade timed out"),
                    }
                    // Another socket may try again.
                    link.upgrading
                        .store(false, std::sync::atomic::Ordering::Release);
                }
            }
        });
        let mut answer = Response::new(Full::default());
        *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = answer.headers_mut();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(SEC_WEBSOCKET_ACCEPT, v);
        }
        answer
    }
}

/// The upgrade's probe and `5`, then the socket goes to the session.
async fn probe(link: &Link, mut ws: Ws) -> Result<(), &'static str> {
    use futures_util::SinkExt;
    read_probe(&mut ws).await?;
    ws.send(Message::Text("3probe".into()))
        .await
        .map_err(|_| "probe answer failed")?;
    link.cmds
        .send(Cmd::Probe)
        .await
        .map_err(|_| "session gone")?;
    read_upgrade(&mut ws).await?;
    if !link.rules.upgrade() {
        return Err("upgraded twice");
    }
    link.upgraded.notify_waiters();
    link.cmds
        .send(Cmd::Upgrade(Box::new(ws)))
        .await
        .map_err(|_| "session gone")
}
