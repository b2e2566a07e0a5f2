//! The one check of a WebSocket upgrade request (RFC 6455 4.2.1), shared by
//! every endpoint that upgrades (`/ws`, rtsync's `/socket.io/`, and the
//! standalone Engine.IO layer): `Upgrade: websocket`, `Connection:
//! upgrade`, version 13 and a key, whose `Sec-WebSocket-Accept` it returns.
//! A leaf: it imports nothing of the crate.

use hyper::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use hyper::HeaderMap;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// `Sec-WebSocket-Accept` for a well-formed upgrade request, or why it is
/// not one.
pub fn accept_key(headers: &HeaderMap) -> Result<String, &'static str> {
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return Err("expected a WebSocket upgrade");
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(hyper::http::HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("Sec-WebSocket-Version must be 13");
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    Ok(derive_accept_key(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_well_formed_request_gets_the_rfc_accept_key() {
        let h = headers(&[
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert_eq!(
            accept_key(&h).as_deref(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn a_missing_header_or_another_version_is_refused() {
        let ok = [
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "x"),
        ];
        for skip in 0..ok.len() {
            let some: Vec<_> = ok
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            assert!(
                accept_key(&headers(&some)).is_err(),
                "without {:?}",
                ok[skip]
            );
        }
        let v8 = [ok[0], ok[1], ("sec-websocket-version", "8"), ok[3]];
        assert!(accept_key(&headers(&v8)).is_err());
    }
}
