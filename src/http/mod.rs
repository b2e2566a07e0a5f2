//! The one port: HTTP/1.1 routes and the WebSocket upgrade at `/ws`.
//!
//! Data flow: [`serve`] accepts TCP connections ([`server::accept_loop`],
//! shared with the sink) and runs each through hyper with upgrades enabled; [`routes::route`] answers HTTP requests or, for
//! `/ws`, answers `101` and hands the upgraded socket to a session task. All
//! tasks are tracked by the app, so shutdown can wait for them.

pub mod api;
pub mod demo;
pub mod encoding;
pub mod history;
pub mod json_io;
pub mod records;
pub mod routes;
pub mod server;
pub mod socketio;
pub mod views;
pub mod ws;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::App;

/// Accepts connections until shutdown.
pub async fn serve(app: Arc<App>, listener: TcpListener) {
    let (shutdown, tasks) = (app.shutdown.clone(), app.tasks.clone());
    server::accept_loop(listener, shutdown, tasks, move |req, peer| {
        routes::route(app.clone(), req, peer.ip())
    })
    .await;
}
