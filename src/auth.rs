//! Who a connection is and which tables it may touch (docs/protocol.md section 2).
//!
//! JWTs are verified with one pinned algorithm: HS256 with a shared secret,
//! or RS256/ES256 with a PEM public key (the key type picks which). `sub` and
//! `exp` are required; `tables` maps table ids (or `"*"`) to `"r"`/`"rw"` or
//! a field-level grant (`crate::grant`); `bases` maps base ids (or `"*"`)
//! to `"r"`/`"rw"` (their base events). A token without `tables` grants
//! nothing. In development mode (`RTS_AUTH=none`) the seed's `{userId,
//! userName, avatarUrl}` form is trusted and grants all, or the `tables` it
//! carries (so the demo can show a user with hidden columns).

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::change::ids::is_valid_id;
use crate::config::{AuthMode, Config};
pub use crate::grant::{Access, BaseGrants, Grants};
use crate::grant::{GrantCache, GrantError};
use crate::metrics::{AuthFailure, Label};
use crate::protocol::messages::AuthenticateReq;

/// An authenticated user.
#[derive(Clone, Debug)]
pub struct Identity {
    pub user_id: String,
    pub user_name: String,
    pub avatar_url: Option<String>,
    pub grants: Grants,
    /// Bases whose events the token grants (`bases`, docs/protocol.md 2.2).
    pub bases: BaseGrants,
    /// Unix seconds after which the connection must close (`exp` plus the
    /// accepted clock skew, so a token accepted is never closed at once).
    pub expires_at: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("{0}")]
    BadClaims(&'static str),
    /// A `tables` grant that cannot be read; the message names it.
    #[error("{0}")]
    Grant(#[from] GrantError),
}

impl AuthError {
    /// Its label in the auth-failure metric.
    pub fn label(&self) -> AuthFailure {
        match self {
            AuthError::Missing => AuthFailure::Missing,
            AuthError::Expired => AuthFailure::Expired,
            AuthError::NotYetValid => AuthFailure::NotYetValid,
            AuthError::Invalid(_) => AuthFailure::Invalid,
            AuthError::BadClaims(_) | AuthError::Grant(_) => AuthFailure::Claims,
        }
    }

    /// Why, in a word: the metric's label, for logs.
    pub fn reason(&self) -> &'static str {
        self.label().value()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read RTS_JWT_PUBLIC_KEY {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("RTS_JWT_PUBLIC_KEY is neither an RSA nor an EC public key in PEM form")]
    BadKey,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    name: Option<String>,
    avatar: Option<String>,
    tables: Option<Map<String, Value>>,
    bases: Option<Map<String, Value>>,
}

pub struct Authenticator {
    mode: AuthMode,
    key: Option<(DecodingKey, Validation)>,
    /// Grants parsed from `tables` claims, shared between equal claims.
    grants: GrantCache,
}

const MAX_NAME_BYTES: usize = 256;
const MAX_AVATAR_BYTES: usize = 2048;

impl Authenticator {
    pub fn from_config(config: &Config) -> Result<Authenticator, AuthConfigError> {
        let key = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(secret), _) => Some((
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )),
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|source| AuthConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                    Some((k, Algorithm::RS256))
                } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                    Some((k, Algorithm::ES256))
                } else {
                    return Err(AuthConfigError::BadKey);
                }
            }
            (None, None) => None,
        };
        let key = key.map(|(k, alg)| {
            let mut v = Validation::new(alg);
            v.leeway = config.jwt_leeway.as_secs();
            v.validate_nbf = true;
            let mut required = vec!["exp", "sub"];
            match &config.jwt_audience {
                Some(aud) => {
                    v.set_audience(&[aud]);
                    required.push("aud");
                }
                None => v.validate_aud = false,
            }
            if let Some(iss) = &config.jwt_issuer {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            v.set_required_spec_claims(&required);
            (k, v)
        });
        Ok(Authenticator {
            mode: config.auth,
            key,
            grants: GrantCache::default(),
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Authenticates an `authenticate` payload (or a token from the upgrade
    /// request, passed as `token`).
    pub fn authenticate(&self, req: &AuthenticateReq) -> Result<Identity, AuthError> {
        if let Some(token) = &req.token {
            return self.verify(token);
        }
        if self.mode == AuthMode::None {
            return dev_identity(req, &self.grants);
        }
        Err(AuthError::Missing)
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let Some((key, validation)) = &self.key else {
            return Err(AuthError::Invalid(
                "tokens are not accepted in development mode; send {userId, userName}".into(),
            ));
        };
        let data = decode::<Claims>(token, key, validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid(e.to_string()),
            }
        })?;
        let c = data.claims;
        let leeway = validation.leeway;
        if !is_valid_id(&c.sub) {
            return Err(AuthError::BadClaims("sub must be a valid id"));
        }
        let grants = match &c.tables {
            Some(claim) => self.grants.parse(claim)?,
            None => Grants::default(),
        };
        let bases = match &c.bases {
            Some(claim) => BaseGrants::from_claim(claim)?,
            None => BaseGrants::default(),
        };
        Ok(Identity {
            bases,
            user_name: bounded(c.name, MAX_NAME_BYTES).unwrap_or_else(|| c.sub.clone()),
            user_id: c.sub,
            avatar_url: bounded(c.avatar, MAX_AVATAR_BYTES),
            grants,
            expires_at: Some(c.exp.saturating_add(leeway)),
        })
    }
}

fn dev_identity(req: &AuthenticateReq, cache: &GrantCache) -> Result<Identity, AuthError> {
    let user_id = req.user_id.clone().ok_or(AuthError::Missing)?;
    if !is_valid_id(&user_id) {
        return Err(AuthError::BadClaims("userId must be a valid id"));
    }
    Ok(Identity {
        user_name: bounded(req.user_name.clone(), MAX_NAME_BYTES)
            .unwrap_or_else(|| user_id.clone()),
        user_id,
        avatar_url: bounded(req.avatar_url.clone(), MAX_AVATAR_BYTES),
        grants: match &req.tables {
            None | Some(Value::Null) => Grants::all(),
            Some(Value::Object(claim)) => cache.parse(claim)?,
            Some(_) => return Err(GrantError("tables must be an object".to_owned()).into()),
        },
        // Every base with every table; a user given `tables` reads the
        // bases of those tables only (as a token without `bases` would).
        bases: match &req.tables {
            None | Some(Value::Null) => BaseGrants::all(),
            Some(_) => BaseGrants::default(),
        },
        expires_at: None,
    })
}

fn bounded(s: Option<String>, max: usize) -> Option<String> {
    s.filter(|s| !s.is_empty() && s.len() <= max)
}
