//! The wire protocol (docs/protocol.md sections 1–5): ids, frames and their
//! MessagePack/JSON codec, request and event payloads, and error codes.
//!
//! Data flow: a WebSocket message → [`codec::decode_frame`] → [`codec::InFrame`]
//! (event name, `data` as a JSON value, `rid`) → a typed request from
//! [`messages`]. Outbound, payloads are encoded by [`codec::encode_frame`], and
//! change events by [`event::ChangeEvent::encoded`] once per encoding.

pub mod codec;
pub mod error;
pub mod event;
pub mod ids;
pub mod messages;
pub mod stream_id;

pub use codec::Encoding;
pub use error::{ErrorCode, RequestError};
pub use stream_id::StreamId;
