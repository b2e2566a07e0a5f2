//! Authentication of a connection (docs/protocol.md section 2): by the
//! `authenticate` event, by a token from the upgrade request, or by a
//! Socket.IO CONNECT's `auth`. All three end in [`finish_auth`]: the
//! per-user connection cap, the `authenticated` frame, the identity
//! taken. A refusal is an error that closes (4401, or 4429 for the cap),
//! answered at the [`edge`].
//!
//! Data flow: `route` / `socketio_connect` / the session's start →
//! `auth.authenticate` (the token checked) → [`finish_auth`] → the
//! session's identity and the app's counts.

use std::sync::atomic::Ordering;

use super::edge;
use super::reply::{send, to_value, Reply};
use super::Session;
use crate::auth::{AuthError, Identity};
use crate::protocol::messages::{AuthenticateReq, Authenticated};
use crate::protocol::ServerEvent;

/// An `authenticate` request carrying only `token`.
pub fn token_request(token: &str) -> AuthenticateReq {
    AuthenticateReq {
        token: Some(token.to_owned()),
        user_id: None,
        user_name: None,
        avatar_url: None,
        tables: None,
    }
}

/// Authenticates with a token from the upgrade request. A refusal sends
/// no error frame: the connection is closed with its code.
pub fn authenticate_with_token(session: &mut Session, token: &str) {
    let result = session.app.auth.authenticate(&token_request(token));
    if let Err(e) = finish_auth(session, result) {
        edge::fail_unanswered(session, &e);
    }
}

/// The `authenticate` event (the gate let it through: not authenticated
/// yet).
pub fn authenticate(session: &mut Session, req: &AuthenticateReq) -> Reply {
    let result = session.app.auth.authenticate(req);
    finish_auth(session, result)
}

/// Takes an identity (or refuses the token): within the user's
/// connection cap, the `authenticated` frame is sent and the identity is
/// the session's.
pub fn finish_auth(session: &mut Session, result: Result<Identity, AuthError>) -> Reply {
    let identity = result.map_err(|e| edge::auth_refused(&e))?;
    let limit = session.app.config.max_connections_per_user.get();
    if !session.app.user_connected(&identity.user_id, limit) {
        return Err(edge::too_many_connections(&identity.user_id, limit));
    }
    if session.app.auth.mode() == crate::config::AuthMode::None {
        tracing::warn!(user = %identity.user_id, "development authentication (RTS_AUTH=none)");
    }
    tracing::info!(user = %identity.user_id, "authenticated");
    let body = Authenticated {
        user_id: &identity.user_id,
        connection_id: session.conn_id(),
        server_time: crate::now_ms(),
    };
    let value = to_value(&body)?;
    send(session, ServerEvent::Authenticated, &value.result, None);
    session.identity = Some(identity);
    session.app.authenticated.fetch_add(1, Ordering::Relaxed);
    crate::metrics::connection_authenticated();
    Ok(value)
}
