//! One POST of a batch to the app: the JSON body `{"tableId", "events"}`,
//! its HMAC signature, and what the answer means (docs/protocol.md section 9):
//! 2xx acknowledges the batch; 5xx, 408, 429, timeouts and connection errors
//! are retried; any other status dead-letters the batch.
//!
//! Redirects are never followed: a 3xx is a permanent failure (dead letter,
//! its `Location` in the reason). Following one would either turn the POST
//! into a GET whose 2xx acknowledges a batch nobody received (301/302/303),
//! or send the signed body to another origin (307/308). Of any answer's
//! body at most [`MAX_REASON_BODY`] bytes are read.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::metrics::SinkOutcome;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Rtsync-Signature";
/// When the request was signed (Unix seconds), and the signature over
/// `"<timestamp>." + body` (the same form as [`SIGNATURE_HEADER`]): a
/// receiver that checks these refuses a captured request replayed later.
pub const TIMESTAMP_HEADER: &str = "X-Rtsync-Timestamp";
pub const TIMESTAMP_SIGNATURE_HEADER: &str = "X-Rtsync-Timestamp-Signature";

/// Most bytes of a refusal's body read for the dead letter's reason; the
/// rest is never read (a receiver's huge error page costs nothing).
pub const MAX_REASON_BODY: usize = 4096;
/// Bytes of the body kept in the reason.
const REASON_CHARS: usize = 512;

/// How a POST ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Worth sending again: the reason, for the log.
    Retry(String),
    /// The app refused the batch for good: its status and the start of its body.
    Dead {
        status: u16,
        reason: String,
    },
}

impl Outcome {
    /// Its label in `rtsync_sink_deliveries_total{outcome}`.
    pub fn label(&self) -> SinkOutcome {
        match self {
            Outcome::Delivered => SinkOutcome::Delivered,
            Outcome::Retry(_) => SinkOutcome::Retried,
            Outcome::Dead { .. } => SinkOutcome::DeadLettered,
        }
    }
}

/// The body's signature: `sha256=<hex>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct Poster {
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
}

impl Poster {
    pub fn new(
        url: String,
        secret: Option<String>,
        timeout: Duration,
    ) -> Result<Poster, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("rtsync-sink/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Poster {
            client,
            url,
            secret,
        })
    }

    /// POSTs one body; `events` counts for the metrics.
    pub async fn post(&self, body: Vec<u8>, events: usize) -> Outcome {
        let mut req = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.secret {
            let ts = (crate::now_ms() / 1000).to_string();
            let mut stamped = Vec::with_capacity(ts.len() + 1 + body.len());
            stamped.extend_from_slice(ts.as_bytes());
            stamped.push(b'.');
            stamped.extend_from_slice(&body);
            req = req
                .header(SIGNATURE_HEADER, sign(secret, &body))
                .header(TIMESTAMP_HEADER, ts)
                .header(TIMESTAMP_SIGNATURE_HEADER, sign(secret, &stamped));
        }
        let began = Instant::now();
        let outcome = match req.body(body).send().await {
            Err(e) if e.is_timeout() => Outcome::Retry("timeout".into()),
            Err(e) => Outcome::Retry(format!("request failed: {e}")),
            Ok(resp) => {
                let status = resp.status().as_u16();
                match status {
                    200..=299 => Outcome::Delivered,
                    408 | 429 | 500..=599 => Outcome::Retry(format!("status {status}")),
                    300..=399 => {
                        let location = resp
                            .headers()
                            .get(reqwest::header::LOCATION)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("(none)");
                        Outcome::Dead {
                            status,
                            reason: truncate(
                                &format!("redirect to {location} (redirects are not followed: set RTS_SINK_URL to the final URL)"),
                                REASON_CHARS,
                            ),
                        }
                    }
                    _ => {
                        let text = body_start(resp).await;
                        Outcome::Dead {
                            status,
                            reason: truncate(&text, REASON_CHARS),
                        }
                    }
                }
            }
        };
        crate::metrics::sink_delivery(outcome.label(), events, began.elapsed());
        outcome
    }
}

/// The first [`MAX_REASON_BODY`] bytes of a body, as text; the rest is
/// left unread (the connection is dropped with it).
async fn body_start(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < MAX_REASON_BODY {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_REASON_BODY - buf.len();
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
