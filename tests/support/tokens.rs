//! JWTs for tests, signed with the suite's secret or throwaway keys.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const SECRET: &str = "test-secret-of-at-least-32-bytes-please-change";

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Claims of `user` with read-write access to every table.
pub fn claims(user: &str) -> Value {
    json!({"sub": user, "exp": now_secs() + 3600, "name": format!("User {user}"), "tables": {"*": "rw"}})
}

pub fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign token")
}

pub fn token(user: &str) -> String {
    hs256(&claims(user))
}

pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn rs256(claims: &Value) -> String {
    let pem = std::fs::read(fixture("rsa_private.pem")).expect("rsa key");
    encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(&pem).expect("rsa pem"),
    )
    .expect("sign token")
}

pub fn es256(claims: &Value) -> String {
    let pem = std::fs::read(fixture("ec_private.pem")).expect("ec key");
    encode(
        &Header::new(Algorithm::ES256),
        claims,
        &EncodingKey::from_ec_pem(&pem).expect("ec pem"),
    )
    .expect("sign token")
}

/// An unsigned token (`alg: none`), which must be refused.
pub fn alg_none(claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
    format!("{header}.{body}.")
}
