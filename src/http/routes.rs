//! HTTP routing: health, readiness, metrics, the REST API and `/ws`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::app::App;
use crate::protocol::{ErrorCode, RequestError};

pub type Body = Full<Bytes>;

pub async fn route(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/ws") => super::ws::upgrade(app, req, peer),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => {
            let loaded = app
                .library_loaded
                .load(std::sync::atomic::Ordering::Acquire);
            if loaded && app.store.ping().await {
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
        (_, p) if p.starts_with("/api/v1/") => super::api::handle(app, req).await,
        (&Method::GET, p) if app.config.demo && (p == "/demo" || p.starts_with("/demo/")) => {
            super::demo::serve(&app.config.demo_dir, p).await
        }
        _ => json_error(ErrorCode::NotFound, "no such route"),
    };
    Ok(response)
}

pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `{"success": false, "error": {code, message}}` (docs/protocol.md section
/// 6), with the status of its code: the one place an error becomes HTTP.
pub fn error_response(e: &RequestError) -> Response<Body> {
    json(
        status_of(e.code),
        &json!({"success": false, "error": {"code": e.code.as_str(), "message": e.message}}),
    )
}

/// The HTTP status of an error code (its one map is `ErrorCode::http_status`).
pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error response of `code` with `message`.
pub fn json_error(code: ErrorCode, message: &str) -> Response<Body> {
    error_response(&RequestError::new(code, message))
}
