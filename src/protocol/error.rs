//! Protocol error codes (docs/protocol.md section 5) and the one error type a
//! request handler returns. Every domain error is mapped to a code here, once;
//! an error also says whether answering it closes the connection, and what
//! is behind it for the logs ([`Cause`]), so the edge that answers it (see
//! `session::edge`) is the one place that sends, closes and logs.

use serde::Serialize;

use super::CloseCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    BadRequest,
    UnknownEvent,
    NotSubscribed,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    /// Sent to Redis, but no answer came in time: it may still be applied.
    Timeout,
    Internal,
    /// HTTP only: no such route or file.
    NotFound,
    /// HTTP only: the route exists, not with this method.
    MethodNotAllowed,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// The HTTP status of the same failure in the REST API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::BadRequest | ErrorCode::UnknownEvent | ErrorCode::NotSubscribed => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal => 500,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
        }
    }
}

/// A request that failed: answered with `["error", {code, message}, rid]`,
/// then, when `close` is set, the connection is closed with that code. The
/// session answers every error at one edge (`session::edge`), which also
/// logs and counts it by its `cause`; nothing is logged where an error is
/// made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
    /// Whether answering it ends the connection, and with which code.
    pub close: Option<CloseCode>,
    /// What the edge logs and counts (never sent).
    pub cause: Option<Cause>,
}

/// What is behind an error, for the logs and metrics of the edge that
/// answers it; never sent to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Storage could not be reached or did not answer (logged at warn).
    StorageUnavailable(String),
    /// Storage failed otherwise (logged at error).
    StorageFailed(String),
    /// A token was refused (counted by `reason`, logged at warn; the
    /// token itself is never logged).
    AuthRefused { reason: &'static str, error: String },
    /// A request other than `authenticate` before authenticating
    /// (counted).
    NotAuthenticated,
    /// The user has too many connections on this sidecar (counted,
    /// logged at warn).
    TooManyConnections { user: String, limit: usize },
}

impl RequestError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            close: None,
            cause: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The same error, ending the connection with `code` once answered.
    pub fn closing(mut self, code: CloseCode) -> Self {
        self.close = Some(code);
        self
    }

    /// The same error, with what the edge logs about it.
    pub fn caused_by(mut self, cause: Cause) -> Self {
        self.cause = Some(cause);
        self
    }

    /// Logs what is behind the error at its level (storage failures,
    /// refused tokens, capped users); nothing for a plain refusal. Called
    /// by the edge that answers it (the session's, the HTTP API's).
    pub fn trace(&self) {
        match &self.cause {
            Some(Cause::StorageUnavailable(error)) => {
                tracing::warn!(error = %error, "redis request failed");
            }
            Some(Cause::StorageFailed(error)) => {
                tracing::error!(error = %error, "redis request failed");
            }
            // Never log the token itself.
            Some(Cause::AuthRefused { reason, error }) => {
                tracing::warn!(reason = *reason, error = %error, "authentication failed");
            }
            Some(Cause::TooManyConnections { user, limit }) => {
                tracing::warn!(user = %user, limit = *limit, "too many connections for one user");
            }
            Some(Cause::NotAuthenticated) | None => {}
        }
    }
}

impl From<crate::change::ChangeError> for RequestError {
    fn from(e: crate::change::ChangeError) -> Self {
        use crate::change::ChangeError;
        match e {
            ChangeError::Invalid(m) => RequestError::new(ErrorCode::BadRequest, m),
            ChangeError::TooLarge(m) => RequestError::new(ErrorCode::PayloadTooLarge, m),
        }
    }
}

impl crate::change::Located for RequestError {
    /// The same error (its close and cause kept), its message prefixed
    /// with `place`.
    fn at(mut self, place: &str) -> Self {
        self.message = format!("{place}: {}", self.message);
        self
    }
}

/// The `data` of an `error` frame.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
}
