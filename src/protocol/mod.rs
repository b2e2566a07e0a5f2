//! The wire protocol (docs/protocol.md sections 1–5): ids, frames and their
//! MessagePack/JSON codec, request and event payloads, error codes, close
//! codes and session ends.
//!
//! Data flow: a WebSocket message → the connection's [`Framing`] →
//! [`framing::ClientFrame`] (a [`messages::ClientEvent`], `data` as a JSON
//! value, `rid`) → the session's typed `Request`, its payload one of
//! [`messages`]. Outbound, the framing encodes each [`ServerEvent`]'s
//! frame, and change events are encoded by [`event`] once per
//! [`Encoding`].

pub mod close;
pub mod codec;
pub mod error;
pub mod event;
pub mod framing;
pub mod messages;
pub mod server_event;

pub use crate::change::StreamId;
pub use close::{CloseCode, Reconnect, SessionEnd};
pub use codec::Encoding;
pub use error::{ErrorCode, RequestError};
pub use framing::{Framing, WsFraming};
pub use server_event::ServerEvent;
