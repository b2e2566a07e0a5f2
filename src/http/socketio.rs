//! `/socket.io/` (docs/protocol.md section 10): Engine.IO's HTTP side is
//! [`crate::socketio::endpoint`], shared with the standalone layer; this is
//! rtsync as its [`Host`]. A polling session is an rtsync session whose
//! input is the POSTs and whose output answers the GETs; a WebSocket
//! without a `sid` is an rtsync session on the socket (`http::ws`).

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::json_io::Body;
use super::ws::{at_capacity, upgrade, Endpoint};
use crate::app::App;
use crate::protocol::SessionEnd;
use crate::session::Opened;
use crate::socketio::endpoint::{self, polling_transport, BodyRefused, Host};
use crate::socketio::framing::SOCKETIO_JSON;
use crate::socketio::polling::{Registry, Started};

pub async fn serve(app: Arc<App>, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
    endpoint::serve(app, req, peer).await
}

impl Host for App {
    fn registry(&self) -> &Registry {
        &self.polling
    }

    fn cors_origins(&self) -> &[String] {
        &self.config.cors_origins
    }

    fn max_payload(&self) -> usize {
        self.config.max_frame_bytes.get()
    }

    /// gzip or deflate, as `/api` bodies ([`super::encoding`]), inflated
    /// off the runtime within `RTS_MAX_FRAME_BYTES`.
    fn decode_body(
        &self,
        headers: &hyper::HeaderMap,
        body: Bytes,
    ) -> impl std::future::Future<Output = Result<Bytes, BodyRefused>> + Send {
        use super::encoding::{inflate_off_runtime, Coding, InflateError};
        let coding = Coding::of_body(headers);
        let max = self.max_payload();
        async move {
            match coding.map_err(BodyRefused::Malformed)? {
                None => Ok(body),
                Some(c) => inflate_off_runtime(body, c, max)
                    .await
                    .map_err(|e| match e {
                        InflateError::TooLarge(n) => BodyRefused::TooLarge(n),
                        other => BodyRefused::Malformed(other.to_string()),
                    }),
            }
        }
    }

    fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn at_capacity(&self) -> Option<Response<Body>> {
        at_capacity(self)
    }

    /// The session counts open and waits to authenticate from now on (the
    /// oldest waiting connections, of its address first, make room); it
    /// runs, with its channels, once the client polls or upgrades. A
    /// handshake never followed by either is closed at the earlier of the
    /// authentication deadline and `pingInterval + pingTimeout` (it could
    /// not have answered the first ping), or sooner when newer connections
    /// need its place; its sid is forgotten then.
    fn open_polling(
        self: &Arc<Self>,
        sid: &str,
        peer: IpAddr,
        start: oneshot::Receiver<Started>,
    ) -> Bytes {
        let (opened, open) = Opened::handshake(self, &SOCKETIO_JSON, peer, sid, true);
        let session = Box::new((self.clone(), opened, sid.to_owned(), peer, start));
        self.tasks.spawn(run_polling(session));
        open.unwrap_or_default()
    }

    fn accept_websocket(self: &Arc<Self>, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        upgrade(self.clone(), req, peer, Endpoint::SocketIo)
    }

    fn deflate(&self) -> Option<crate::compression::Deflate> {
        self.config.deflate(true)
    }
}

/// What a polling session's task starts from.
type PollingSession = (Arc<App>, Opened, String, IpAddr, oneshot::Receiver<Started>);

/// A polling session's task: waits for its first poll, then runs it. Its
/// start comes boxed and is unpacked at once: an async fn keeps its
/// arguments for its whole life, beside the running session's future.
async fn run_polling(session: Box<PollingSession>) {
    let (app, opened, sid, peer, start) = *session;
    let auth_deadline = opened.auth_deadline();
    let silent_deadline = opened.silent_deadline(&app.config);
    // Boxed: the session's task holds this wait's timer and futures only
    // until the first poll, not for the session's life.
    let started = Box::pin(async {
        tokio::select! {
            started = start => started.map_err(|_| SessionEnd::ClosedBeforePolled),
            () = opened.outbox.closed() => Err(SessionEnd::ClosedBeforePolled),
            () = tokio::time::sleep_until(auth_deadline.min(silent_deadline)) => {
                if auth_deadline <= silent_deadline {
                    crate::metrics::auth_failure(crate::metrics::AuthFailure::Timeout);
                    Err(SessionEnd::NeverPolled)
                } else {
                    Err(SessionEnd::PingTimeoutBeforePolled)
                }
            }
            () = app.shutdown.cancelled() => Err(SessionEnd::ShuttingDown),
        }
    })
    .await;
    match started {
        Ok(started) => {
            let transport =
                polling_transport(started, sid.clone(), app.config.max_frame_bytes.get());
            // Boxed: a session waiting for its first poll holds only this
            // task's small state.
            Box::pin(crate::session::run_opened(
                app.clone(),
                opened,
                transport,
                None,
                peer,
            ))
            .await;
        }
        Err(reason) => {
            app.polling.remove(&sid);
            opened.abandon(&app, reason);
        }
    }
    app.polling.remove(&sid);
}
