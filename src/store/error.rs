//! Redis failures, classified once by their kind (never by message text):
//! a request that could not be sent (`unavailable`: nothing was written,
//! retry later), one that was sent but got no answer in time or lost its
//! connection (`timeout`: it may still be applied; resend with the same
//! `clientChangeId`), bad input refused by the function library (error code
//! `RTSYNC_INVALID`: `bad_request`), or anything else (`internal`).

use crate::metrics::RedisErrorKind;
use crate::protocol::error::Cause;
use crate::protocol::{ErrorCode, RequestError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis is unavailable: {0}")]
    Unavailable(redis::RedisError),
    #[error("no answer from redis in time: {0}")]
    Timeout(redis::RedisError),
    #[error("{0}")]
    Refused(String),
    /// The function refused a change that would make a record's state
    /// larger than its bound (`RTSYNC_TOO_LARGE`).
    #[error("{0}")]
    TooLarge(String),
    #[error("bad redis configuration: {0}")]
    Config(redis::RedisError),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
    #[error("redis error: {0}")]
    Other(redis::RedisError),
}

/// Server error codes that mean "not now" rather than "never".
const TRANSIENT_CODES: [&str; 6] = [
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "BUSY",
];

/// The error code of the function library's refusals (`lua/rtsync.lua`).
const INVALID_CODE: &str = "RTSYNC_INVALID";
/// The code of a change refused for the record's size bound.
const TOO_LARGE_CODE: &str = "RTSYNC_TOO_LARGE";

impl StoreError {
    /// Classifies a Redis failure and counts it in
    /// `rtsync_redis_errors_total{kind}`.
    pub fn from_redis(e: redis::RedisError) -> StoreError {
        let error = StoreError::classify(e);
        if let Some(kind) = error.label() {
            crate::metrics::redis_error(kind);
        }
        error
    }

    /// Its label in `rtsync_redis_errors_total{kind}`: only failures of
    /// Redis itself are counted, not refusals of the function library or
    /// bad replies.
    pub fn label(&self) -> Option<RedisErrorKind> {
        match self {
            StoreError::Unavailable(_) => Some(RedisErrorKind::Unavailable),
            StoreError::Timeout(_) => Some(RedisErrorKind::Timeout),
            StoreError::Other(_) => Some(RedisErrorKind::Other),
            StoreError::Refused(_)
            | StoreError::TooLarge(_)
            | StoreError::Config(_)
            | StoreError::Reply(_) => None,
        }
    }

    /// What a Redis failure means, by its kind (never its text); no side
    /// effects.
    pub fn classify(e: redis::RedisError) -> StoreError {
        if e.code() == Some(INVALID_CODE) {
            let msg = e.detail().unwrap_or("refused by the function library");
            return StoreError::Refused(msg.trim().to_owned());
        }
        if e.code() == Some(TOO_LARGE_CODE) {
            let msg = e.detail().unwrap_or("over the record size bound");
            return StoreError::TooLarge(msg.trim().to_owned());
        }
        // Refused before sending, or a server that answered "not now":
        // nothing was done.
        if e.is_connection_refusal() || e.code().is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
            return StoreError::Unavailable(e);
        }
        // Sent, but the answer never came: the command may have run.
        if e.is_timeout() || e.is_connection_dropped() || e.is_io_error() {
            return StoreError::Timeout(e);
        }
        StoreError::Other(e)
    }

    /// `XINFO` of a key that does not exist (Redis answers `ERR no such
    /// key`; the one place that reads an error's detail).
    pub fn is_no_such_key(e: &redis::RedisError) -> bool {
        e.code() == Some("ERR") && e.detail().is_some_and(|d| d.trim() == "no such key")
    }

    /// True when the Redis server answered that the function library is
    /// not loaded (a restart without persistence).
    pub fn is_missing_function(&self) -> bool {
        matches!(self, StoreError::Other(e)
            if e.code() == Some("ERR") && e.detail().is_some_and(|d| d.starts_with("Function not found")))
    }

    /// Redis could not be reached or did not answer: a fault, not a bug.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

/// The protocol error of a storage failure. No side effects: the storage
/// error's text is kept as the error's [`Cause`] (logged by the edge that
/// answers it: warn when unavailable, error when internal), never sent.
impl From<StoreError> for RequestError {
    fn from(e: StoreError) -> RequestError {
        match e {
            StoreError::Unavailable(_) => RequestError::new(
                ErrorCode::Unavailable,
                "storage is unavailable; retry later (a retry with the same clientChangeId is safe)",
            )
            .caused_by(Cause::StorageUnavailable(e.to_string())),
            StoreError::Timeout(_) => RequestError::new(
                ErrorCode::Timeout,
                "storage did not answer in time; the outcome is unknown: retry (a change resent with the same clientChangeId is applied once)",
            )
            .caused_by(Cause::StorageUnavailable(e.to_string())),
            StoreError::Refused(msg) => RequestError::bad_request(msg),
            StoreError::TooLarge(msg) => RequestError::new(ErrorCode::PayloadTooLarge, msg),
            StoreError::Config(_) | StoreError::Reply(_) | StoreError::Other(_) => {
                RequestError::new(ErrorCode::Internal, "internal storage error")
                    .caused_by(Cause::StorageFailed(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, RedisError};

    #[test]
    fn failures_are_classified_by_kind_without_side_effects() {
        let io = RedisError::from(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "gone"));
        assert!(matches!(StoreError::classify(io), StoreError::Timeout(_)));
        let refused = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "no",
        ));
        assert!(matches!(
            StoreError::classify(refused),
            StoreError::Unavailable(_)
        ));
        let unknown = RedisError::from((ErrorKind::Parse, "odd reply"));
        assert!(matches!(
            StoreError::classify(unknown),
            StoreError::Other(_)
        ));
    }

    #[test]
    fn a_storage_failure_keeps_its_detail_as_the_cause_not_the_message() {
        let e = RequestError::from(StoreError::Reply("odd reply".into()));
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(e.message, "internal storage error");
        assert_eq!(
            e.cause,
            Some(Cause::StorageFailed(
                "unexpected reply from redis: odd reply".into()
            ))
        );
        assert_eq!(e.close, None);
    }
}
