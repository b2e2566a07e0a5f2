//! Protocol error codes (docs/protocol.md section 5) and the one error type a
//! request handler returns. Every domain error is mapped to a code here, once.

use serde::Serialize;

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

/// A request that failed: answered with `["error", {code, message}, rid]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
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
    fn at(self, place: &str) -> Self {
        RequestError::new(self.code, format!("{place}: {}", self.message))
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
