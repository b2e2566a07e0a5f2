//! Redis failures, classified once: a fault of the connection or server
//! (`unavailable`: nothing was written, retry later), bad input refused by
//! the function library (`bad_request`), or anything else (`internal`).

use crate::protocol::{ErrorCode, RequestError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis is unavailable: {0}")]
    Unavailable(redis::RedisError),
    #[error("{0}")]
    Refused(String),
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

impl StoreError {
    pub fn from_redis(e: redis::RedisError) -> StoreError {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
        {
            crate::metrics::redis_error("unavailable");
            return StoreError::Unavailable(e);
        }
        let text = e.to_string();
        if let Some(pos) = text.find("rtsync_commit:") {
            let msg = text[pos + "rtsync_commit:".len()..].trim().to_owned();
            return StoreError::Refused(msg);
        }
        crate::metrics::redis_error("other");
        StoreError::Other(e)
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<StoreError> for RequestError {
    fn from(e: StoreError) -> RequestError {
        match e {
            StoreError::Unavailable(_) => RequestError::new(
                ErrorCode::Unavailable,
                "storage is unavailable; retry later (a retry with the same clientChangeId is safe)",
            ),
            StoreError::Refused(msg) => RequestError::bad_request(msg),
            StoreError::Config(_) | StoreError::Reply(_) | StoreError::Other(_) => {
                tracing::error!(error = %e, "redis request failed");
                RequestError::new(ErrorCode::Internal, "internal storage error")
            }
        }
    }
}
