//! Engine.IO's HTTP side, shared by rtsync's `/socket.io/` and the
//! standalone server ([`super::server`]): what a request asks for (from its
//! method and query), and the answers Engine.IO clients read (its HTTP 400
//! errors, the polling bodies' content type, CORS).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};

/// An Engine.IO request, once its query is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `OPTIONS`: a CORS preflight.
    Preflight,
    /// `transport=polling` GET with no `sid`: opens a session.
    Handshake,
    /// `transport=polling` GET of a session: its next packets.
    Get(String),
    /// `transport=polling` POST of a session: packets from the client.
    Post(String),
    /// `transport=websocket`: a new session, or with a `sid` the upgrade
    /// of a polling one.
    WebSocket(Option<String>),
}

/// Engine.IO's errors: HTTP 400 with `{"code", "message"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineError {
    pub code: u8,
    pub message: &'static str,
}

pub const TRANSPORT_UNKNOWN: EngineError = EngineError {
    code: 0,
    message: "Transport unknown",
};
pub const SESSION_UNKNOWN: EngineError = EngineError {
    code: 1,
    message: "Session ID unknown",
};
pub const BAD_HANDSHAKE_METHOD: EngineError = EngineError {
    code: 2,
    message: "Bad handshake method",
};
pub const BAD_REQUEST: EngineError = EngineError {
    code: 3,
    message: "Bad request",
};
pub const PAYLOAD_TOO_LARGE: EngineError = EngineError {
    code: 3,
    message: "Payload too large",
};
pub const UNSUPPORTED_VERSION: EngineError = EngineError {
    code: 5,
    message: "Unsupported protocol version",
};

impl Route {
    /// Reads a request's method and query (`EIO`, `transport`, `sid`).
    pub fn of(method: &Method, query: Option<&str>) -> Result<Route, EngineError> {
        if method == Method::OPTIONS {
            return Ok(Route::Preflight);
        }
        let mut eio = None;
        let mut transport = None;
        let mut sid = None;
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "EIO" => eio = Some(v.into_owned()),
                "transport" => transport = Some(v.into_owned()),
                "sid" => sid = Some(v.into_owned()),
                _ => {}
            }
        }
        if eio.as_deref() != Some("4") {
            return Err(UNSUPPORTED_VERSION);
        }
        match (transport.as_deref(), sid, method) {
            (Some("websocket"), sid, &Method::GET) => Ok(Route::WebSocket(sid)),
            (Some("polling"), None, &Method::GET) => Ok(Route::Handshake),
            (Some("polling"), None, _) => Err(BAD_HANDSHAKE_METHOD),
            (Some("polling"), Some(sid), &Method::GET) => Ok(Route::Get(sid)),
            (Some("polling"), Some(sid), &Method::POST) => Ok(Route::Post(sid)),
            (Some("polling" | "websocket"), _, _) => Err(BAD_REQUEST),
            _ => Err(TRANSPORT_UNKNOWN),
        }
    }
}

/// An Engine.IO error answer: HTTP 400 `{"code", "message"}`.
pub fn engine_error(e: EngineError) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"code": e.code, "message": e.message}).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A polling body (or `ok` for a POST).
pub fn text(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

/// The answer to a CORS preflight (the origin headers are added by
/// [`cors`]).
pub fn preflight() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::default());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("content-type"),
    );
    r
}

/// CORS for polling from another origin: a listed origin is echoed back,
/// with credentials; with `*`, any origin is answered `*` and never with
/// credentials (browsers refuse credentials with `*`, and echoing any
/// origin with them would let every site act as its visitors); the opaque
/// origin `null` (sandboxed frames, `file:` pages) is never echoed; with
/// none allowed, no header (same origin only).
pub fn cors(allowed: &[String], origin: Option<&HeaderValue>, r: &mut Response<Full<Bytes>>) {
    let Some(origin) = origin else { return };
    let null = origin.as_bytes().eq_ignore_ascii_case(b"null");
    let listed = !null && allowed.iter().any(|a| a.as_bytes() == origin.as_bytes());
    let h = r.headers_mut();
    if listed {
        h.insert("access-control-allow-origin", origin.clone());
        h.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
        h.insert("vary", HeaderValue::from_static("Origin"));
    } else if allowed.iter().any(|a| a == "*") {
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_from_their_method_and_query() {
        let get = Method::GET;
        let of = |q: &str| Route::of(&get, Some(q));
        assert_eq!(of("EIO=4&transport=polling"), Ok(Route::Handshake));
        assert_eq!(
            of("EIO=4&transport=polling&sid=a&t=x"),
            Ok(Route::Get("a".into()))
        );
        assert_eq!(
            Route::of(&Method::POST, Some("EIO=4&transport=polling&sid=a")),
            Ok(Route::Post("a".into()))
        );
        assert_eq!(
            of("EIO=4&transport=websocket&sid=a"),
            Ok(Route::WebSocket(Some("a".into())))
        );
        assert_eq!(of("EIO=3&transport=polling"), Err(UNSUPPORTED_VERSION));
        assert_eq!(of("transport=polling"), Err(UNSUPPORTED_VERSION));
        assert_eq!(of("EIO=4&transport=pigeon"), Err(TRANSPORT_UNKNOWN));
        assert_eq!(
            Route::of(&Method::POST, Some("EIO=4&transport=polling")),
            Err(BAD_HANDSHAKE_METHOD)
        );
        assert_eq!(
            Route::of(&Method::PUT, Some("EIO=4&transport=polling&sid=a")),
            Err(BAD_REQUEST)
        );
        assert_eq!(Route::of(&Method::OPTIONS, None), Ok(Route::Preflight));
    }

    fn cors_of(allowed: &[&str], origin: &'static str) -> (Option<String>, bool) {
        let allowed: Vec<String> = allowed.iter().map(|a| (*a).to_owned()).collect();
        let mut r = text(StatusCode::OK, Bytes::new());
        cors(&allowed, Some(&HeaderValue::from_static(origin)), &mut r);
        let h = r.headers();
        (
            h.get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            h.contains_key("access-control-allow-credentials"),
        )
    }

    #[test]
    fn cors_echoes_listed_origins_with_credentials_and_answers_a_star_without() {
        let app = "https://app.example";
        assert_eq!(cors_of(&[app], app), (Some(app.to_owned()), true));
        assert_eq!(cors_of(&[app], "https://evil.example"), (None, false));
        assert_eq!(cors_of(&["*"], app), (Some("*".to_owned()), false));
        assert_eq!(cors_of(&["*", app], app), (Some(app.to_owned()), true));
        assert_eq!(cors_of(&["*"], "null"), (Some("*".to_owned()), false));
        assert_eq!(cors_of(&["null"], "null"), (None, false));
    }
}
