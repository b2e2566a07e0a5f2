//! A conformance server for rtsync's Engine.IO / Socket.IO layer
//! (`rtsync::socketio::server`), with no Redis and no rtsync session,
//! configured as the Engine.IO and Socket.IO protocol documents describe
//! for their compliance suites:
//!
//! - `/engine.io/`: raw Engine.IO that echoes every message (text or binary);
//! - `/socket.io/`: on connect, emits `auth` with the CONNECT's auth payload;
//!   `message` → emits `message-back` with the same arguments;
//!   `message-with-ack` → acks with the same arguments; the namespace
//!   `/custom` emits `auth` on connect too; any other is refused;
//! - pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1,000,000, connect
//!   timeout 1 s, CORS `*`;
//! - a 1 ms pause after each WebSocket message, as Node's engine.io paces
//!   writes (see `Config::message_pacing`).
//!
//! ```text
//! cargo run --release --example socketio_conformance -- 127.0.0.1:3000
//! ```
//!
//! `tests/socketio_conformance.rs` runs it in-process on a free port.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use rtsync::socketio::server::namespaces::{self, Ack, Args, Handler, Socket};
use rtsync::socketio::server::{Config, Conn, Server};

/// The compliance suites' settings.
pub fn config() -> Config {
    Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        cors_origins: vec!["*".to_owned()],
        // The suites read one WebSocket message per event-loop turn.
        message_pacing: Some(Duration::from_millis(1)),
        ..Config::default()
    }
}

/// The Socket.IO suite's connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// `/engine.io/`: every message back as it came.
async fn echo(mut conn: Conn) {
    while let Some(frame) = conn.incoming.recv().await {
        if conn.outgoing.send(frame).await.is_err() {
            break;
        }
    }
}

/// `/socket.io/`'s handler.
struct Conformance;

impl Handler for Conformance {
    fn has_namespace(&self, nsp: &str) -> bool {
        nsp == "/" || nsp == "/custom"
    }

    fn on_connect(&self, socket: &Socket, auth: &Value) {
        let _ = socket.emit("auth", Args::json(vec![auth.clone()]));
    }

    fn on_event(&self, socket: &Socket, event: &str, args: Args, ack: Option<Ack>) {
        match (event, ack) {
            ("message", _) => {
                let _ = socket.emit("message-back", args);
            }
            ("message-with-ack", Some(ack)) => {
                let _ = ack.send(args);
            }
            _ => {}
        }
    }
}

/// Serves both endpoints on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken, tasks: TaskTracker) {
    let engine = Server::new(config(), echo, tasks.clone(), shutdown.clone());
    let handler = Arc::new(Conformance);
    let options = namespaces::Options {
        connect_timeout: CONNECT_TIMEOUT,
    };
    let socketio = Server::new(
        config(),
        move |conn| namespaces::run(conn, handler.clone(), options.clone()),
        tasks.clone(),
        shutdown.clone(),
    );
    rtsync::http::server::accept_loop(listener, shutdown, tasks, move |req, _peer| {
        let (engine, socketio) = (engine.clone(), socketio.clone());
        async move {
            let path = req.uri().path().trim_end_matches('/');
            let answer = match path {
                "/engine.io" => engine.handle(req).await,
                "/socket.io" => socketio.handle(req).await,
                _ => {
                    let mut r = hyper::Response::new(http_body_util::Full::default());
                    *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                    r
                }
            };
            Ok::<_, std::convert::Infallible>(answer)
        }
    })
    .await;
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    tracing::info!(%addr, "socket.io conformance server listening");
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let server = tokio::spawn(serve(listener, shutdown.clone(), tasks.clone()));
    tokio::signal::ctrl_c().await?;
    shutdown.cancel();
    tasks.close();
    server.await?;
    tasks.wait().await;
    Ok(())
}
