//! The one port: HTTP/1.1 routes and the WebSocket upgrade at `/ws`.
//!
//! Data flow: [`serve`] accepts TCP connections and runs each through hyper
//! with upgrades enabled; [`routes::route`] answers HTTP requests or, for
//! `/ws`, answers `101` and hands the upgraded socket to a session task. All
//! tasks are tracked by the app, so shutdown can wait for them.

pub mod api;
pub mod demo;
pub mod json_io;
pub mod records;
pub mod routes;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::app::App;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until shutdown.
pub async fn serve(app: Arc<App>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = app.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app2 = app.clone();
        let app2_shutdown = app.shutdown.clone();
        app.tasks.spawn(async move {
            let service = service_fn(move |req| routes::route(app2.clone(), req, peer.ip()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = app2_shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
    tracing::info!("stopped accepting connections");
}
