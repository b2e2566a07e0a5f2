//! One WebSocket connection, from upgrade to close.
//!
//! Data flow: the read loop below takes frames off the socket and hands
//! each to [`frame::handle_frame`] (rate limit, decoding, attachments),
//! then [`route::dispatch`] (the authentication gate, the typed
//! [`request::Request`], its handler), one at a time (so a client's
//! requests are answered in order); failures are answered at the one
//! [`edge`]. Replies and fan-out frames go through the
//! connection's [`outbox::Outbox`] to its writer task. The loop also owns the
//! connection's deadlines: authentication within 10 s (4408), token expiry
//! (4401), and the server's shutdown (4500). How it ended is a
//! [`SessionEnd`], which knows its close code.

pub mod attachments;
pub mod auth;
pub mod base_access;
pub mod commit;
pub mod edge;
pub mod frame;
pub mod liveness;
pub mod offline;
pub mod presence_relay;
pub mod rate_limit;
pub mod record_history;
pub mod records;
pub mod reply;
pub mod request;
pub mod route;
pub mod row_write;
pub mod socketio_connect;
pub mod steps;
pub mod tables;
pub mod undo;

/// The transport types live in [`crate::transport`] (the standalone
/// Engine.IO layer runs on them too); these paths keep naming them.
pub use crate::transport::{self, socket};

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;

use crate::app::App;
use crate::auth::Identity;
use crate::outbox::{self, CloseCode, Outbox};
use crate::presence::Coalescer;
use crate::protocol::{Framing, SessionEnd};

/// How long a connection may stay unauthenticated.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the writer may take to finish after the read loop ends.
const WRITER_GRACE: Duration = Duration::from_secs(3);
/// How long input is read and dropped after the server sent its close
/// frame, so the client (perhaps still writing a large frame) reads the
/// close code instead of a reset.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// Largest frame accepted before `authenticate` (an `authenticate` frame
/// is a token and little else); larger ones close the connection 4413.
pub const PRE_AUTH_MAX_FRAME: usize = 16 * 1024;

pub use crate::transport::socket::Socket;
pub use crate::transport::{Input, Output, Transport};

/// Per-connection state that requests read and change.
pub struct Session {
    pub app: Arc<App>,
    pub outbox: Outbox,
    pub identity: Option<Identity>,
    /// Subscribed tables and each subscription's start (its ack's
    /// `lastEventId`), for recovery on a subscribed table.
    pub tables: HashMap<String, crate::change::StreamId>,
    /// Bases whose stream this connection reads (docs/protocol.md 3.2), joined
    /// with the first subscribed table of the base and left with its last.
    pub bases: HashMap<String, tables::BaseSubscription>,
    /// Cursor and selection updates waiting for their relay slot.
    pub coalescer: Coalescer,
    pub limiter: rate_limit::RateLimiter,
    /// A fresh subscription's steps after its ack, waiting briefly for a
    /// recovery of the same table (see [`reply::Held`]).
    pub held: Option<Box<reply::Held>>,
    /// A Socket.IO request waiting for its binary attachments.
    pub partial: Option<Box<attachments::Partial>>,
    /// The client's address (what the audit log records and limits by).
    pub peer: std::net::IpAddr,
}

impl Session {
    pub fn conn_id(&self) -> &str {
        &self.outbox.conn_id
    }

    pub fn framing(&self) -> &'static dyn Framing {
        self.outbox.framing()
    }
}

/// A connection counted open, with its outbox, before its session runs: a
/// long-polling handshake opens one at once (it counts against
/// `RTS_MAX_CONNECTIONS` and takes its place among the connections waiting
/// to authenticate), and its session runs only once the client polls.
pub struct Opened {
    conn_id: Arc<str>,
    pub outbox: Outbox,
    receiver: outbox::OutboxReceiver,
    /// Its place among the connections waiting to authenticate, if taken.
    waiting: Option<crate::waiting::Ticket>,
    /// When it opened: the authentication deadline runs from here.
    at: Instant,
    /// Whether the framing's opening frame was already sent (a long-polling
    /// handshake answers with it).
    opening_sent: bool,
}

impl Opened {
    /// Counts a connection open and makes its outbox.
    pub fn open(app: &App, framing: &'static dyn Framing) -> Opened {
        let conn_id = app.next_connection_id();
        app.connections.fetch_add(1, Ordering::Relaxed);
        crate::metrics::connection_opened();
        let (outbox, receiver) = outbox::outbox(
            conn_id.clone(),
            framing,
            app.config.send_queue.get(),
            app.config.send_queue_bytes.get(),
        );
        Opened {
            conn_id,
            outbox,
            receiver,
            waiting: None,
            at: Instant::now(),
            opening_sent: false,
        }
    }

    /// A long-polling handshake: it waits to authenticate from now on (the
    /// oldest waiting connections make room, see [`crate::waiting`]), and
    /// its opening frame is the handshake's answer.
    pub fn handshake(
        app: &App,
        framing: &'static dyn Framing,
        peer: std::net::IpAddr,
        engine_sid: &str,
        upgrades: bool,
    ) -> (Opened, Option<bytes::Bytes>) {
        let mut opened = Opened::open(app, framing);
        opened.waiting = Some(app.waiting.admit(peer, opened.outbox.clone()));
        let heartbeat = liveness::heartbeat(&app.config, upgrades);
        let opening = framing.opening(engine_sid, &heartbeat);
        opened.opening_sent = true;
        (opened, opening)
    }

    /// When it must have authenticated.
    pub fn auth_deadline(&self) -> Instant {
        self.at + AUTH_TIMEOUT
    }

    /// When a connection that has sent nothing since it opened is dead by
    /// Engine.IO's heartbeat: it could not have answered the ping due
    /// `pingInterval` after the open within `pingTimeout`.
    pub fn silent_deadline(&self, config: &crate::config::Config) -> Instant {
        let hb = liveness::heartbeat(config, false);
        crate::socketio::heartbeat::Heartbeat::new(hb.interval, hb.timeout, self.at)
            .silent_deadline()
    }

    /// Ends a connection whose session never ran (evicted, or never
    /// polled): its place and its count are given back. It is closed 4408
    /// whatever `end` was: it never authenticated.
    pub fn abandon(self, app: &App, end: SessionEnd) {
        if let Some(ticket) = self.waiting {
            app.waiting.leave(ticket);
        }
        self.outbox.close(CloseCode::AuthTimeout);
        app.connections.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::connection_closed(false);
        tracing::info!(conn = %self.conn_id, reason = end.message(), end = end.label(), reconnect = ?end.reconnect(), "connection closed");
    }
}

/// Runs a connection to its end: its input is read here, its output
/// belongs to the writer task. `token` is a JWT from the upgrade request.
pub fn run(
    app: Arc<App>,
    transport: Transport,
    framing: &'static dyn Framing,
    token: Option<String>,
    peer: std::net::IpAddr,
) -> impl std::future::Future<Output = ()> + Send {
    let opened = Opened::open(&app, framing);
    run_opened(app, opened, transport, token, peer)
}

/// Runs a connection already counted open ([`Opened`]) to its end.
///
/// The setup (the writer, the session, a token from the upgrade) runs
/// here, before the returned future: that future is what an idle
/// connection's task holds, so it keeps only a [`Running`] (the session
/// boxed), not the arguments and the session side by side.
pub fn run_opened(
    app: Arc<App>,
    opened: Opened,
    transport: Transport,
    token: Option<String>,
    peer: std::net::IpAddr,
) -> impl std::future::Future<Output = ()> + Send {
    let Transport {
        input,
        output,
        engine_sid,
        deflate,
    } = transport;
    let span = tracing::info_span!("conn", id = %opened.conn_id);
    let entered = span.enter();
    let Opened {
        outbox,
        receiver,
        waiting,
        at,
        opening_sent,
        ..
    } = opened;
    tracing::info!(encoding = ?outbox.framing().encoding(), "connection opened");
    let writer = start_writer(
        &app,
        output,
        receiver.deflate(deflate),
        engine_sid.as_deref(),
        &outbox,
        !opening_sent,
    );
    let mut session = Box::new(Session {
        app: app.clone(),
        outbox,
        identity: None,
        tables: HashMap::new(),
        bases: HashMap::new(),
        coalescer: Coalescer::default(),
        limiter: rate_limit::RateLimiter::new(app.config.rate_limit.get(), Instant::now()),
        held: None,
        partial: None,
        peer,
    });
    // A token from the upgrade is verified before the connection could
    // take a place among those waiting to authenticate.
    if let Some(token) = token {
        auth::authenticate_with_token(&mut session, &token);
    }
    let waiting = match waiting {
        Some(ticket) => Some(ticket),
        None => session
            .identity
            .is_none()
            .then(|| app.waiting.admit(peer, session.outbox.clone())),
    };
    drop(entered);
    let running = Running {
        session,
        input,
        waiting,
        at,
        engine_sid,
        writer,
    };
    running.run().instrument(span)
}

/// A connection's state while it runs, kept small: an idle connection's
/// task holds this and the read loop's wait, nothing else.
struct Running {
    session: Box<Session>,
    input: Input,
    waiting: Option<crate::waiting::Ticket>,
    /// When it opened (its deadlines run from here).
    at: Instant,
    engine_sid: Option<String>,
    writer: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The read loop, then the connection's end: what it held is left,
    /// the writer gets its grace, unread input is drained.
    async fn run(mut self) {
        let app = self.session.app.clone();
        let peer = self.session.peer;
        let end = serve(
            &mut self.session,
            &mut self.input,
            &mut self.waiting,
            self.at,
            peer,
        )
        .await;
        // A client that closed or stopped answering is gone: its Engine.IO
        // sid is forgotten at once (a request naming it is refused), not
        // after the writer's grace. A session the server closed keeps it
        // until its next GET has collected the close; one the client closed
        // by a POST, until the poll its close ended was answered.
        if let Some(sid) = self.engine_sid.as_deref().filter(|_| end.client_gone()) {
            app.polling
                .remove_unless(sid, crate::socketio::polling::Link::closed_by_client);
        }
        let user = self.session.identity.as_ref().map(|i| i.user_id.clone());
        app.audit
            .session_ended(peer, user.as_deref(), end, self.session.outbox.close_code());
        let authenticated = finish(&mut self.session, self.waiting.take()).await;
        if tokio::time::timeout(WRITER_GRACE, &mut self.writer)
            .await
            .is_err()
        {
            tracing::debug!("writer did not finish in time");
        }
        if end.server_closed() {
            Box::pin(self.input.drain(CLOSE_DRAIN)).await;
        }
        app.connections.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::connection_closed(authenticated);
        tracing::info!(reason = end.message(), end = end.label(), reconnect = ?end.reconnect(), "connection closed");
    }
}

/// Spawns the connection's writer (owned by the app's task tracker:
/// shutdown waits for it, and its close handshake has a deadline), and
/// queues the framing's opening frame (Socket.IO's `open`) first.
fn start_writer(
    app: &App,
    output: Output,
    receiver: outbox::OutboxReceiver,
    engine_sid: Option<&str>,
    outbox: &Outbox,
    send_opening: bool,
) -> tokio::task::JoinHandle<()> {
    let write_timeout = app.config.write_timeout;
    let upgrades = matches!(output, Output::Polling { .. });
    let writer = match output {
        Output::Ws(sink) => app
            .tasks
            .spawn(receiver.run(sink, write_timeout).in_current_span()),
        Output::Polling { cmds, format } => app.tasks.spawn(
            receiver
                .run_polling(cmds, format, write_timeout)
                .in_current_span(),
        ),
    };
    let heartbeat = liveness::heartbeat(&app.config, upgrades);
    let sid = engine_sid.unwrap_or(&outbox.conn_id);
    if send_opening {
        if let Some(open) = outbox.framing().opening(sid, &heartbeat) {
            outbox.push_text(open);
        }
    }
    writer
}

/// The connection's read loop and deadlines, until it ends; how it ended
/// (a deadline's end has asked the outbox for its close code already).
/// `opened`: when the connection opened (its authentication deadline and
/// its heartbeat run from there).
async fn serve(
    session: &mut Session,
    input: &mut Input,
    waiting: &mut Option<crate::waiting::Ticket>,
    opened: Instant,
    peer: std::net::IpAddr,
) -> SessionEnd {
    let app = session.app.clone();
    let mut live = liveness::Liveness::new(session.framing(), &app.config, opened);
    let mut auth_deadline = opened + AUTH_TIMEOUT;
    loop {
        // One timer for all of the session's deadlines (the earliest): an
        // idle connection's future holds one `Sleep`, not one per deadline.
        let due = next_due(session, &live, auth_deadline);
        // Before authenticate a frame may be small: a compressed one must
        // not inflate further than that (past it, closed 4413).
        input.set_inflate_bound(match session.identity {
            Some(_) => usize::MAX,
            None => PRE_AUTH_MAX_FRAME,
        });
        tokio::select! {
            _ = app.shutdown.cancelled() => return end(session, SessionEnd::ShuttingDown),
            _ = session.outbox.closed() => return SessionEnd::ClosedByServer,
            _ = tokio::time::sleep_until(due) => {
                if let Some(ended) = Box::pin(on_due(session, &mut live, auth_deadline)).await {
                    return ended;
                }
            }
            msg = input.next() => {
                live.heard();
                if let Some(ended) = on_message(session, msg, waiting).await {
                    return ended;
                }
                if session.identity.is_none() && waiting.is_none() {
                    // It left its Socket.IO socket (`41`): unauthenticated
                    // again, it waits to authenticate like a new connection.
                    *waiting = Some(app.waiting.admit(peer, session.outbox.clone()));
                    auth_deadline = Instant::now() + AUTH_TIMEOUT;
                }
            }
        }
    }
}

/// The session's deadlines, each when it applies: authentication (until
/// authenticated), the token's expiry, held steps, awaited attachments,
/// coalesced relays; and the heartbeat's, always.
struct Deadlines {
    auth: Option<Instant>,
    expiry: Option<Instant>,
    held: Option<Instant>,
    attachments: Option<Instant>,
    relay: Option<Instant>,
    beat: Instant,
}

impl Deadlines {
    fn of(session: &Session, live: &liveness::Liveness, auth_deadline: Instant) -> Deadlines {
        Deadlines {
            auth: session.identity.is_none().then_some(auth_deadline),
            expiry: session
                .identity
                .as_ref()
                .and_then(|i| i.expires_at)
                .map(deadline_of),
            held: session.held.as_ref().map(|h| h.until),
            attachments: session.partial.as_ref().map(|p| p.due),
            relay: session.coalescer.next_due(),
            beat: live.deadline(),
        }
    }
}

/// The earliest of the session's deadlines.
fn next_due(session: &Session, live: &liveness::Liveness, auth_deadline: Instant) -> Instant {
    let d = Deadlines::of(session, live, auth_deadline);
    [d.auth, d.expiry, d.held, d.attachments, d.relay]
        .into_iter()
        .flatten()
        .fold(d.beat, Instant::min)
}

/// Acts on every deadline that has passed, in this order: authentication
/// (4408), the token's expiry (4401), held steps, awaited attachments,
/// coalesced relays, the heartbeat; how the connection ends, if it does.
async fn on_due(
    session: &mut Session,
    live: &mut liveness::Liveness,
    auth_deadline: Instant,
) -> Option<SessionEnd> {
    let d = Deadlines::of(session, live, auth_deadline);
    let now = Instant::now();
    let passed = |at: Option<Instant>| at.is_some_and(|at| at <= now);
    if passed(d.auth) {
        crate::metrics::auth_failure(crate::metrics::AuthFailure::Timeout);
        return Some(end(session, SessionEnd::AuthTimeout));
    }
    if passed(d.expiry) {
        return Some(end(session, SessionEnd::TokenExpired));
    }
    if passed(d.held) {
        steps::release_held(session).await;
    }
    if passed(d.attachments) {
        frame::expire_partial(session);
    }
    if passed(d.relay) {
        presence_relay::flush_due(session).await;
    }
    if d.beat <= now {
        if let Some(ended) = live.on_deadline(session) {
            return Some(end(session, ended));
        }
    }
    None
}

/// Asks the outbox for `end`'s close code (when it has one); `end`.
fn end(session: &Session, end: SessionEnd) -> SessionEnd {
    if let Some(code) = end.close_code() {
        session.outbox.close(code);
    }
    end
}

/// One read from the socket: a frame handled, a ping answered, or how
/// the connection ends.
async fn on_message(
    session: &mut Session,
    msg: Option<Result<Message, WsError>>,
    waiting: &mut Option<crate::waiting::Ticket>,
) -> Option<SessionEnd> {
    match msg {
        None => Some(SessionEnd::ClientGone),
        Some(Ok(Message::Binary(b))) if too_early(session, b.len()) => {
            Some(end(session, SessionEnd::LargeFrameBeforeAuth))
        }
        Some(Ok(Message::Text(t))) if too_early(session, t.len()) => {
            Some(end(session, SessionEnd::LargeFrameBeforeAuth))
        }
        // Boxed: request handling is a deep future; boxing keeps the
        // per-connection task small while it is idle.
        Some(Ok(Message::Binary(b))) => {
            let end = Box::pin(frame::handle_frame(session, &b, false)).await;
            left_waiting(session, waiting);
            end
        }
        Some(Ok(Message::Text(t))) => {
            let end = Box::pin(frame::handle_frame(session, t.as_bytes(), true)).await;
            left_waiting(session, waiting);
            end
        }
        Some(Ok(Message::Close(_))) => Some(SessionEnd::ClientClosed),
        // Answered through the outbox (the writer owns the socket); pings
        // count against the rate limit, so a ping flood gets closed.
        Some(Ok(Message::Ping(payload))) => {
            session.outbox.pong(payload);
            frame::count_ping(session);
            None
        }
        Some(Ok(_)) => None,
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. }))) => {
            crate::metrics::frame_rejected(crate::metrics::FrameRejected::TooLarge);
            tracing::warn!(size, "frame over RTS_MAX_FRAME_BYTES");
            Some(end(session, SessionEnd::FrameTooLarge))
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "websocket read failed");
            Some(SessionEnd::ReadError)
        }
    }
}

/// Leaves everything the connection held (its waiting place, tables,
/// presence, its user's count) and asks the writer to close; whether it
/// had authenticated.
async fn finish(session: &mut Session, waiting: Option<crate::waiting::Ticket>) -> bool {
    let app = session.app.clone();
    if let Some(ticket) = waiting {
        app.waiting.leave(ticket);
    }
    leave_tables(session).await;
    session.outbox.close(CloseCode::Normal);
    let authenticated = session.identity.is_some();
    if let Some(identity) = &session.identity {
        app.authenticated.fetch_sub(1, Ordering::Relaxed);
        app.user_disconnected(&identity.user_id);
    }
    authenticated
}

/// Leaves every subscribed table (fan-out, bases, presence).
async fn leave_tables(session: &mut Session) {
    for table in std::mem::take(&mut session.tables).into_keys() {
        Box::pin(tables::leave_table(session, &table)).await;
    }
}

/// Socket.IO's DISCONNECT (`41`): the client leaves its socket on the main
/// namespace, not the connection. What the socket held goes: its tables
/// (fan-out, presence), steps still held, attachments still awaited,
/// relays still coalesced, and its identity (its user's count here and
/// the authenticated count). The Engine.IO connection and its heartbeat go
/// on; the client must CONNECT and authenticate again to do more, and
/// waits to authenticate like a new connection meanwhile (the read loop
/// gives it a place and a fresh deadline).
pub async fn leave_socket(session: &mut Session) {
    session.held = None;
    session.partial = None;
    leave_tables(session).await;
    session.coalescer = Coalescer::default();
    if let Some(identity) = session.identity.take() {
        session.app.authenticated.fetch_sub(1, Ordering::Relaxed);
        session.app.user_disconnected(&identity.user_id);
        crate::metrics::connection_unauthenticated();
        tracing::info!(user = %identity.user_id, "left the Socket.IO socket");
    }
}

/// Gives the place among connections waiting to authenticate back once
/// the session has authenticated.
fn left_waiting(session: &Session, waiting: &mut Option<crate::waiting::Ticket>) {
    if session.identity.is_some() {
        if let Some(ticket) = waiting.take() {
            session.app.waiting.leave(ticket);
        }
    }
}

/// A frame over [`PRE_AUTH_MAX_FRAME`] before authentication: counted
/// and logged (the caller ends the connection 4413).
fn too_early(session: &Session, len: usize) -> bool {
    if session.identity.is_some() || len <= PRE_AUTH_MAX_FRAME {
        return false;
    }
    crate::metrics::frame_rejected(crate::metrics::FrameRejected::TooLarge);
    tracing::warn!(len, "frame over 16 KiB before authenticate");
    true
}

fn deadline_of(exp_secs: u64) -> Instant {
    let now_ms = crate::now_ms();
    let in_ms = (exp_secs.saturating_mul(1000)).saturating_sub(now_ms);
    Instant::now() + Duration::from_millis(in_ms)
}
