//! HTTP content codings (docs/protocol.md 1.1): `/api/v1` responses and
//! Engine.IO long-polling responses of at least `RTS_COMPRESSION_THRESHOLD`
//! bytes are gzip- or deflate-compressed when the request's
//! `Accept-Encoding` allows it, and `/api/v1` request bodies sent with
//! `Content-Encoding: gzip` or `deflate` are inflated within the body limit.
//!
//! Data flow: the router reads the request's `Accept-Encoding` before
//! dispatching ([`Coding::accepted`]) and hands the finished response to
//! [`compress`]; `json_io::read_json` hands a received body to
//! [`inflate_off_runtime`] (a blocking thread runs [`inflate`]).
//! Each call uses its own short-lived compressor: nothing is held between
//! requests.

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::read::{MultiGzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, VARY};
use hyper::Response;

/// A response body (the one `json_io` uses; named here so this module
/// imports nothing of its neighbours).
type Body = Full<Bytes>;

/// Bodies above this are compressed off the runtime's threads.
const BLOCKING_ABOVE: usize = 64 * 1024;

/// A content coding rtsync writes or reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// HTTP's `deflate`: a zlib stream (RFC 9110 8.4.1.2).
    Deflate,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }

    /// The coding a request's `Accept-Encoding` allows, gzip first; none
    /// for a coding given `q=0` or not named (`*` stands for gzip).
    pub fn accepted(headers: &HeaderMap) -> Option<Coding> {
        let allowed = |wanted: &str| {
            headers
                .get_all(ACCEPT_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|item| {
                    let mut parts = item.split(';').map(str::trim);
                    let name = parts.next().unwrap_or_default();
                    let refused = parts.any(|p| {
                        p.strip_prefix("q=")
                            .and_then(|q| q.parse::<f32>().ok())
                            .is_some_and(|q| q <= 0.0)
                    });
                    !refused
                        && (name.eq_ignore_ascii_case(wanted) || name == "*" && wanted == "gzip")
                })
        };
        if allowed("gzip") {
            Some(Coding::Gzip)
        } else if allowed("deflate") {
            Some(Coding::Deflate)
        } else {
            None
        }
    }

    /// The coding a body was sent with: `Ok(None)` for none (or
    /// `identity`), `Err` naming one rtsync does not read. Codings applied
    /// one over another (in one header or in several) are refused, not
    /// partly undone: rtsync inflates once.
    pub fn of_body(headers: &HeaderMap) -> Result<Option<Coding>, String> {
        let mut values = headers.get_all(CONTENT_ENCODING).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err("several Content-Encoding headers; send one coding".to_owned());
        }
        let value = value
            .to_str()
            .map_err(|_| "Content-Encoding is not ASCII".to_owned())?
            .trim();
        match value.to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" => Ok(Some(Coding::Deflate)),
            other => Err(format!(
                "unsupported Content-Encoding {other:?}; send gzip or deflate"
            )),
        }
    }
}

/// The response compressed with `coding` when its body is at least
/// `threshold` bytes, not already encoded, and compression shrinks it.
pub async fn compress(
    response: Response<Body>,
    coding: Coding,
    threshold: usize,
) -> Response<Body> {
    if response.headers().contains_key(CONTENT_ENCODING) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    if bytes.len() < threshold {
        return Response::from_parts(parts, Full::new(bytes));
    }
    let packed = if bytes.len() > BLOCKING_ABOVE {
        let input = bytes.clone();
        tokio::task::spawn_blocking(move || encode(&input, coding))
            .await
            .ok()
            .flatten()
    } else {
        encode(&bytes, coding)
    };
    parts
        .headers
        .append(VARY, HeaderValue::from_static("Accept-Encoding"));
    match packed.filter(|p| p.len() < bytes.len()) {
        Some(packed) => {
            crate::metrics::http_body_compressed(bytes.len() - packed.len());
            parts
                .headers
                .insert(CONTENT_ENCODING, HeaderValue::from_static(coding.name()));
            parts.headers.remove(hyper::header::CONTENT_LENGTH);
            Response::from_parts(parts, Full::new(packed))
        }
        None => Response::from_parts(parts, Full::new(bytes)),
    }
}

fn encode(bytes: &[u8], coding: Coding) -> Option<Bytes> {
    let out = Vec::with_capacity(bytes.len() / 4);
    let packed = match coding {
        Coding::Gzip => {
            let mut e = GzEncoder::new(out, Compression::fast());
            e.write_all(bytes).ok()?;
            e.finish().ok()?
        }
        Coding::Deflate => {
            let mut e = ZlibEncoder::new(out, Compression::fast());
            e.write_all(bytes).ok()?;
            e.finish().ok()?
        }
    };
    Some(Bytes::from(packed))
}

/// Why a compressed body was not read.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("body over {0} bytes once inflated")]
    TooLarge(usize),
    #[error("body does not inflate: {0}")]
    Malformed(std::io::Error),
    /// The blocking task inflating it did not finish (shutdown).
    #[error("inflating the body was interrupted")]
    Interrupted,
}

/// [`inflate`] on a blocking thread: a body of a few KiB may inflate to
/// `RTS_MAX_BODY_BYTES` (4 MiB), milliseconds of work the runtime's
/// threads must not spend.
pub async fn inflate_off_runtime(
    body: Bytes,
    coding: Coding,
    max: usize,
) -> Result<Bytes, InflateError> {
    tokio::task::spawn_blocking(move || inflate(&body, coding, max))
        .await
        .unwrap_or(Err(InflateError::Interrupted))
}

/// A body sent with `coding`, inflated; at most `max` inflated bytes are
/// ever held (one more is read to tell that the limit was passed).
pub fn inflate(body: &[u8], coding: Coding, max: usize) -> Result<Bytes, InflateError> {
    let reader: Box<dyn Read + '_> = match coding {
        // A gzip body may be several members (RFC 1952 2.2): all are read.
        Coding::Gzip => Box::new(MultiGzDecoder::new(body)),
        Coding::Deflate => Box::new(ZlibDecoder::new(body)),
    };
    let mut out = Vec::new();
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(InflateError::Malformed)?;
    if out.len() > max {
        return Err(InflateError::TooLarge(max));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn accept_encoding_picks_gzip_then_deflate_and_honours_q_zero() {
        assert_eq!(
            Coding::accepted(&accept("gzip, deflate, br")),
            Some(Coding::Gzip)
        );
        assert_eq!(Coding::accepted(&accept("deflate")), Some(Coding::Deflate));
        assert_eq!(
            Coding::accepted(&accept("gzip;q=0, deflate")),
            Some(Coding::Deflate)
        );
        assert_eq!(Coding::accepted(&accept("*")), Some(Coding::Gzip));
        assert_eq!(Coding::accepted(&accept("br, identity")), None);
        assert_eq!(Coding::accepted(&HeaderMap::new()), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_large_body_is_inflated_off_the_runtime_thread() {
        let bomb = encode(&vec![b' '; 8 << 20], Coding::Gzip).expect("encodes");
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
        let result = inflate_off_runtime(bomb, Coding::Gzip, 4 << 20).await;
        let seen = ticks.load(std::sync::atomic::Ordering::Relaxed);
        ticker.abort();
        assert!(matches!(result, Err(InflateError::TooLarge(_))));
        assert!(
            seen > 0,
            "the runtime's only thread was held while inflating"
        );
    }

    #[test]
    fn stacked_content_codings_are_refused_in_one_header_or_in_several() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip, gzip"));
        assert!(Coding::of_body(&h).is_err());
        let mut h = HeaderMap::new();
        h.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(Coding::of_body(&h).is_err());
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("identity"));
        assert_eq!(Coding::of_body(&h).ok(), Some(None));
    }

    #[test]
    fn a_gzip_body_of_several_members_inflates_to_all_of_them() {
        let mut body = encode(b"{\"a\":", Coding::Gzip).expect("encodes").to_vec();
        body.extend_from_slice(&encode(b"1}", Coding::Gzip).expect("encodes"));
        let got = inflate(&body, Coding::Gzip, 1 << 20).expect("inflates");
        assert_eq!(&got[..], b"{\"a\":1}");
    }

    #[test]
    fn an_encoded_body_inflates_back_and_a_bomb_stops_at_the_limit() {
        for coding in [Coding::Gzip, Coding::Deflate] {
            let body = b"{\"a\":1}".repeat(100);
            let packed = encode(&body, coding).expect("encodes");
            assert_eq!(inflate(&packed, coding, 1 << 20).expect("inflates"), body);
            let bomb = encode(&vec![b' '; 8 << 20], coding).expect("encodes");
            assert!(matches!(
                inflate(&bomb, coding, 1 << 20),
                Err(InflateError::TooLarge(_))
            ));
        }
    }
}
