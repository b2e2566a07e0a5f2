//! The framing's control packets (docs/protocol.md section 10): Engine.IO
//! pings and close, and Socket.IO's CONNECT and DISCONNECT on the main
//! namespace. A CONNECT's `auth.token` authenticates before the socket is
//! accepted; a refusal is CONNECT_ERROR with the code, then the close.
//!
//! Data flow: `frame::handle_frame` → [`control`] → `auth::finish_auth`
//! for a CONNECT's token, `super::leave_socket` for a DISCONNECT.

use serde_json::Value;

use super::{auth, edge, Session};
use crate::protocol::framing::Control;
use crate::protocol::{ErrorCode, SessionEnd};

/// A control packet of the framing (Socket.IO's pings and connects).
/// Engine.IO's close ends the connection; Socket.IO's DISCONNECT only
/// ends the socket on it (see [`super::leave_socket`]).
pub async fn control(session: &mut Session, c: Control) -> Option<SessionEnd> {
    match c {
        Control::Pong | Control::Ignore => None,
        Control::Ping(payload) => {
            if let Some(pong) = session.framing().pong(&payload) {
                session.outbox.push_text(pong);
            }
            None
        }
        Control::Close => Some(SessionEnd::ClientClosed),
        Control::Disconnect => {
            Box::pin(super::leave_socket(session)).await;
            None
        }
        Control::Connect { nsp, auth, binary } => {
            // A CONNECT in binary form names the msgpack parser: the
            // connection's frames are that parser's from now on.
            if let Some(parser) = binary.then(|| session.framing().binary_parser()).flatten() {
                session.outbox.choose_framing(parser);
            }
            connect(session, &nsp, auth.as_ref());
            None
        }
    }
}

fn push(session: &Session, frame: Option<bytes::Bytes>) {
    if let Some(frame) = frame {
        session.outbox.push(frame, None);
    }
}

/// A Socket.IO CONNECT (docs/protocol.md section 10): the main namespace
/// only; a token in its `auth` is checked before the connection is
/// accepted (a refusal is CONNECT_ERROR with the code, then the close).
/// Without one the client authenticates with the `authenticate` event.
fn connect(session: &mut Session, nsp: &str, auth: Option<&Value>) {
    let framing = session.framing();
    if nsp != "/" {
        push(
            session,
            framing.connect_error(nsp, "Invalid namespace", None),
        );
        return;
    }
    let token = auth
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .filter(|_| session.identity.is_none());
    let Some(token) = token else {
        push(session, framing.connected(nsp, session.conn_id()));
        return;
    };
    match session.app.auth.authenticate(&auth::token_request(token)) {
        Ok(identity) => {
            push(session, framing.connected(nsp, session.conn_id()));
            if let Err(e) = auth::finish_auth(session, Ok(identity)) {
                edge::fail_unanswered(session, &e);
            }
        }
        Err(e) => {
            let refused = edge::auth_refused(&e);
            let code = ErrorCode::Unauthenticated.as_str();
            // Counted and logged, answered CONNECT_ERROR, then closed.
            edge::fail_answered_by(session, &refused, || {
                push(
                    session,
                    framing.connect_error(nsp, &e.to_string(), Some(code)),
                );
            });
        }
    }
}
