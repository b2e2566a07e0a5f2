//! HTTP routing: health, readiness, metrics, the REST API and `/ws`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};

use super::json_io::{json_error, text, Body};
use super::ws::Endpoint;
use crate::app::App;
use crate::protocol::ErrorCode;

/// Each route's work is its own boxed future: hyper keeps a box the size
/// of this future for every keep-alive connection (and a parked long-poll
/// holds it), so it stays the size of the routing, not of the largest route.
pub async fn route(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let coding = compressible(&app, &req, &path)
        .then(|| super::encoding::Coding::accepted(req.headers()))
        .flatten();
    let (threshold, app) = (app.config.compression_threshold, app);
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/ws") => super::ws::upgrade(app, req, peer, Endpoint::Ws),
        (_, "/socket.io/" | "/socket.io") if app.config.socketio => {
            Box::pin(super::socketio::serve(app, req, peer)).await
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => {
            let loaded = app
                .library_loaded
                .load(std::sync::atomic::Ordering::Acquire);
            if loaded && Box::pin(app.store.ping()).await {
                text(StatusCode::OK, "ready")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable")
            }
        }
        (&Method::GET, "/metrics") => {
            app.metrics.run_upkeep();
            let mut r = Response::new(Full::new(Bytes::from(app.metrics.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (_, p) if p.starts_with("/api/v1/") => Box::pin(super::api::handle(app, req, peer)).await,
        (&Method::GET, p) if app.config.demo && (p == "/demo" || p.starts_with("/demo/")) => {
            Box::pin(super::demo::serve(&app.config.demo_dir, p)).await
        }
        _ => json_error(ErrorCode::NotFound, "no such route"),
    };
    Ok(match coding {
        Some(c) if response.status() != StatusCode::SWITCHING_PROTOCOLS => {
            Box::pin(super::encoding::compress(response, c, threshold)).await
        }
        _ => response,
    })
}

/// Whether the response may be compressed (docs/protocol.md 1.1): the
/// API's, and Engine.IO long-polling GETs (not upgrades), when on.
fn compressible(app: &App, req: &Request<Incoming>, path: &str) -> bool {
    let polling = matches!(path, "/socket.io/" | "/socket.io")
        && req.method() == Method::GET
        && !req.headers().contains_key(hyper::header::UPGRADE);
    app.config.compression == crate::config::Switch::On && (path.starts_with("/api/v1/") || polling)
}
