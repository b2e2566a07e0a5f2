//! Why a change was refused before anything was sent. The protocol maps it
//! to an error code once (`protocol::error`), so this module needs nothing
//! of the wire.

/// A change (or one of its parts) that breaks a rule of [`super::rules`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// A rule of shape: an id, a type, a version (`bad_request`).
    #[error("{0}")]
    Invalid(String),
    /// A bound of size or count (`payload_too_large`).
    #[error("{0}")]
    TooLarge(String),
}

/// An error that can say where in a batch it was found (`changes[3]`,
/// `records[0]`), by prefixing its message.
pub trait Located {
    /// The same error, said to be found at `place`.
    fn at(self, place: &str) -> Self;
}

impl Located for ChangeError {
    fn at(self, place: &str) -> ChangeError {
        match self {
            ChangeError::Invalid(m) => ChangeError::Invalid(format!("{place}: {m}")),
            ChangeError::TooLarge(m) => ChangeError::TooLarge(format!("{place}: {m}")),
        }
    }
}
