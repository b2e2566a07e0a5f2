//! JSON in and out of the HTTP routes: request bodies read with a size
//! bound and a deadline, and responses, errors included: every HTTP error
//! is an `ErrorCode`, whose status is mapped in one place
//! (`ErrorCode::http_status`). A leaf of `http`: the routes use it, it uses
//! none of them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::app::App;
use crate::protocol::{ErrorCode, RequestError};

pub type Body = Full<Bytes>;

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
    e.trace();
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

/// How long a request body may take to arrive (`/api` JSON bodies and
/// `/socket.io/` polling POSTs): a client that sends its
/// headers and then trickles (or never sends) the body cannot hold a
/// connection and a task for ever.
pub const BODY_READ_TIMEOUT: std::time::Duration = crate::socketio::endpoint::BODY_READ_TIMEOUT;

pub async fn read_json(app: &App, req: Request<Incoming>) -> Result<Value, RequestError> {
    let coding = super::encoding::Coding::of_body(req.headers()).map_err(|message| {
        crate::metrics::http_body_refused();
        tracing::warn!(%message, "request body refused");
        RequestError::bad_request(message)
    })?;
    let limited = Limited::new(req.into_body(), app.config.max_body_bytes.get());
    let Ok(collected) = tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await else {
        tracing::warn!("request body not received in time");
        return Err(RequestError::bad_request(format!(
            "request body not received within {BODY_READ_TIMEOUT:?}"
        )));
    };
    let bytes = match collected {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(RequestError::new(
                ErrorCode::PayloadTooLarge,
                format!("body over {} bytes", app.config.max_body_bytes.get()),
            ))
        }
    };
    let bytes = match coding {
        None => bytes,
        Some(c) => inflated(bytes, c, app.config.max_body_bytes.get()).await?,
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| RequestError::bad_request(format!("invalid JSON: {e}")))
}

/// A compressed body inflated within `max` bytes (`payload_too_large` past
/// it, `bad_request` when it does not inflate); counted and logged.
async fn inflated(
    body: Bytes,
    coding: super::encoding::Coding,
    max: usize,
) -> Result<Bytes, RequestError> {
    use super::encoding::InflateError;
    let result = super::encoding::inflate_off_runtime(body, coding, max).await;
    result.map_err(|e| {
        crate::metrics::http_body_refused();
        tracing::warn!(error = %e, "request body refused");
        match e {
            InflateError::TooLarge(_) => {
                RequestError::new(ErrorCode::PayloadTooLarge, e.to_string())
            }
            InflateError::Malformed(_) => RequestError::bad_request(e.to_string()),
            InflateError::Interrupted => RequestError::new(ErrorCode::Internal, e.to_string()),
        }
    })
}
