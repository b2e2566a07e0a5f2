//! The demo page at `/demo` (with `--demo`): static files from
//! `RTS_DEMO_DIR`, read on each request so edits show without a restart.
//! Only plain file names are served: no paths, no dot files.

use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Response, StatusCode};

use super::json_io::{json_error, Body};
use crate::protocol::ErrorCode;

pub async fn serve(dir: &Path, path: &str) -> Response<Body> {
    if path == "/demo" {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
        r.headers_mut()
            .insert(LOCATION, HeaderValue::from_static("/demo/"));
        return r;
    }
    let name = match path.trim_start_matches("/demo/") {
        "" => "index.html",
        n => n,
    };
    let plain = !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !plain {
        return json_error(ErrorCode::NotFound, "no such file");
    }
    match tokio::fs::read(dir.join(name)).await {
        Ok(bytes) => {
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
            r
        }
        Err(_) => json_error(
            ErrorCode::NotFound,
            "no such file (build the client: cd clients/js && npm install && npm run build)",
        ),
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}
