//! A change, in its three shapes, and the rules it obeys. A leaf: it needs
//! nothing else of the crate, and everything that writes or reads changes
//! needs it.
//!
//! ```text
//!  record_change ─┐
//!  offline change ├─► ChangeRequest ──validate──► ValidChange ──► store::commit
//!  HTTP batch ────┘      (as it arrives)         (typed FieldChange,   (FCALL
//!                                                 encoded once)     rtsync_commit)
//!  stream entry ──from_entry──► ChangeEvent (id: StreamId) ──► hub ──► wire
//! ```
//!
//! Every rule exists once in Rust ([`ids`], [`rules`], the bounds in
//! [`valid`]), and once more in `lua/commit.lua`, because other services
//! call the function directly; `tests/change_rules.rs` checks that the two
//! agree on one table of inputs.

#![warn(missing_docs)]

pub mod error;
pub mod event;
pub mod field;
pub mod ids;
pub mod request;
pub mod rules;
pub mod stream_id;
pub mod valid;
pub mod value;
pub mod visible;

pub use error::{ChangeError, Located};
pub use event::ChangeEvent;
pub use field::FieldChange;
pub use request::ChangeRequest;
pub use stream_id::StreamId;
pub use valid::{validate_batch, ChangeLimits, UndoStep, ValidChange};
pub use visible::Visible;
