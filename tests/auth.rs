//! Authentication (docs/protocol.md section 2) and table grants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::client::{change, Client};
use support::tokens::{self, claims, now_secs};
use support::{RedisServer, Sidecar};

async fn one_sidecar(env: &[(&str, &str)]) -> (RedisServer, Sidecar) {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "auth-a", env).await;
    (redis, side)
}

async fn assert_refused(side: &Sidecar, token: String) {
    let mut c = Client::open(side, None, &[], "").await;
    let err = c
        .request("authenticate", json!({"token": token}))
        .await
        .expect_err("authentication should fail");
    assert_eq!(err["code"], "unauthenticated");
    assert_eq!(c.closed().await, Some(4401));
}

#[tokio::test(flavor = "multi_thread")]
async fn hs256_token_in_message_authenticates() {
    let (_r, side) = one_sidecar(&[]).await;
    let mut c = Client::open(&side, None, &[], "").await;
    let ack = c
        .request_ok("authenticate", json!({"token": tokens::token("alice")}))
        .await;
    assert_eq!(ack["userId"], "alice");
    assert!(ack["connectionId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(ack["serverTime"].as_u64().unwrap() > 1_600_000_000_000);
    let event = c.expect_event("authenticated").await;
    assert_eq!(event["userId"], "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_header_authenticates_on_upgrade() {
    let (_r, side) = one_sidecar(&[]).await;
    let auth = format!("Bearer {}", tokens::token("bob"));
    let mut c = Client::open(&side, None, &[("Authorization", &auth)], "").await;
    assert_eq!(c.expect_event("authenticated").await["userId"], "bob");
    c.request_ok(
        "subscribe_to_table",
        json!({"tableId": "t1", "viewId": "v"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn query_token_authenticates_on_upgrade() {
    let (_r, side) = one_sidecar(&[]).await;
    let query = format!("?token={}", tokens::token("carol"));
    let mut c = Client::open(&side, None, &[], &query).await;
    assert_eq!(c.expect_event("authenticated").await["userId"], "carol");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_token_is_refused_with_4401() {
    let (_r, side) = one_sidecar(&[]).await;
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims("mallory"),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    assert_refused(&side, forged).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_token_is_refused_with_4401() {
    let (_r, side) = one_sidecar(&[]).await;
    let mut c = claims("old");
    c["exp"] = json!(now_secs() - 3600);
    assert_refused(&side, tokens::hs256(&c)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alg_none_token_is_refused_with_4401() {
    let (_r, side) = one_sidecar(&[]).await;
    assert_refused(&side, tokens::alg_none(&claims("mallory"))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_of_another_algorithm_is_refused() {
    // The server is pinned to HS256; an RS256 token must not pass.
    let (_r, side) = one_sidecar(&[]).await;
    assert_refused(&side, tokens::rs256(&claims("x"))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_credentials_are_refused_with_4401() {
    let (_r, side) = one_sidecar(&[]).await;
    let mut c = Client::open(&side, None, &[], "").await;
    let err = c.request("authenticate", json!({})).await.unwrap_err();
    assert_eq!(err["code"], "unauthenticated");
    assert_eq!(c.closed().await, Some(4401));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_without_sub_is_refused() {
    let (_r, side) = one_sidecar(&[]).await;
    let token = tokens::hs256(&json!({"exp": now_secs() + 60}));
    assert_refused(&side, token).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_before_authentication_are_refused() {
    let (_r, side) = one_sidecar(&[]).await;
    let mut c = Client::open(&side, None, &[], "").await;
    let err = c
        .request("subscribe_to_table", json!({"tableId": "t"}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "unauthenticated");
    // Only `authenticate` is accepted first: anything else closes 4401.
    assert_eq!(c.closed().await, Some(4401));
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_connection_is_closed_after_10s_with_4408() {
    let (_r, side) = one_sidecar(&[]).await;
    let mut c = Client::open(&side, None, &[], "").await;
    let started = std::time::Instant::now();
    assert_eq!(c.closed().await, Some(4408));
    assert!(started.elapsed() >= Duration::from_secs(9));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_expiry_closes_an_open_connection() {
    let (_r, side) = one_sidecar(&[("RTS_JWT_LEEWAY_SECS", "0")]).await;
    let mut c = claims("short");
    c["exp"] = json!(now_secs() + 2);
    let mut client = Client::open(&side, None, &[], "").await;
    client
        .request_ok("authenticate", json!({"token": tokens::hs256(&c)}))
        .await;
    assert_eq!(client.closed().await, Some(4401));
}

#[tokio::test(flavor = "multi_thread")]
async fn rs256_public_key_verifies_tokens() {
    let key = tokens::fixture("rsa_public.pem");
    let (_r, side) = one_sidecar(&[
        ("RTS_JWT_SECRET", ""),
        ("RTS_JWT_PUBLIC_KEY", key.to_str().unwrap()),
    ])
    .await;
    let mut c = Client::open(&side, None, &[], "").await;
    let ack = c
        .request_ok(
            "authenticate",
            json!({"token": tokens::rs256(&claims("rsa-user"))}),
        )
        .await;
    assert_eq!(ack["userId"], "rsa-user");
    assert_refused(&side, tokens::token("hs-user")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn es256_public_key_verifies_tokens() {
    let key = tokens::fixture("ec_public.pem");
    let (_r, side) = one_sidecar(&[
        ("RTS_JWT_SECRET", ""),
        ("RTS_JWT_PUBLIC_KEY", key.to_str().unwrap()),
    ])
    .await;
    let mut c = Client::open(&side, None, &[], "").await;
    let ack = c
        .request_ok(
            "authenticate",
            json!({"token": tokens::es256(&claims("ec-user"))}),
        )
        .await;
    assert_eq!(ack["userId"], "ec-user");
}

#[tokio::test(flavor = "multi_thread")]
async fn development_mode_accepts_the_seed_form() {
    let (_r, side) = one_sidecar(&[("RTS_AUTH", "none"), ("RTS_JWT_SECRET", "")]).await;
    let mut c = Client::open(&side, None, &[], "").await;
    let ack = c
        .request_ok(
            "authenticate",
            json!({"userId": "dev", "userName": "Dev", "avatarUrl": "https://x/a.png"}),
        )
        .await;
    assert_eq!(ack["userId"], "dev");
    c.request_ok("record_change", change("any", "r1", "f1", json!(1)))
        .await;
    side.wait_for_log("RTS_AUTH=none").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn read_grant_allows_subscribe_but_not_writes() {
    let (_r, side) = one_sidecar(&[]).await;
    let mut c = claims("reader");
    c["tables"] = json!({"t-read": "r", "t-rw": "rw"});
    let mut client = Client::open(&side, None, &[], "").await;
    client
        .request_ok("authenticate", json!({"token": tokens::hs256(&c)}))
        .await;
    client
        .request_ok(
            "subscribe_to_table",
            json!({"tableId": "t-read", "viewId": "v"}),
        )
        .await;
    let err = client
        .request("record_change", change("t-read", "r1", "f", json!(1)))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "forbidden");
    client
        .request_ok("record_change", change("t-rw", "r1", "f", json!(1)))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_outside_the_grants_are_forbidden() {
    let (_r, side) = one_sidecar(&[]).await;
    let mut c = claims("narrow");
    c["tables"] = json!({"mine": "rw"});
    let mut client = Client::open(&side, None, &[], "").await;
    client
        .request_ok("authenticate", json!({"token": tokens::hs256(&c)}))
        .await;
    let err = client
        .request(
            "subscribe_to_table",
            json!({"tableId": "other", "viewId": "v"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err["code"], "forbidden");
    let err = client
        .request("record_change", change("other", "r1", "f", json!(1)))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_without_tables_claim_grants_nothing() {
    let (_r, side) = one_sidecar(&[]).await;
    let token = tokens::hs256(&json!({"sub": "u", "exp": now_secs() + 60}));
    let mut client = Client::open(&side, None, &[], "").await;
    client
        .request_ok("authenticate", json!({"token": token}))
        .await;
    let err = client
        .request("subscribe_to_table", json!({"tableId": "t", "viewId": "v"}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_not_valid_yet_is_refused() {
    let (_r, side) = one_sidecar(&[]).await;
    let mut c = claims("early");
    c["nbf"] = json!(now_secs() + 3600);
    assert_refused(&side, tokens::hs256(&c)).await;
    // Within the accepted clock skew it is fine.
    let mut c = claims("skewed");
    c["nbf"] = json!(now_secs() + 5);
    let mut client = Client::open(&side, None, &[], "").await;
    client
        .request_ok("authenticate", json!({"token": tokens::hs256(&c)}))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audience_and_issuer_are_checked_when_configured() {
    let (_r, side) = one_sidecar(&[
        ("RTS_JWT_AUDIENCE", "rtsync"),
        ("RTS_JWT_ISSUER", "https://app.example"),
    ])
    .await;
    let good = || {
        let mut c = claims("u");
        c["aud"] = json!("rtsync");
        c["iss"] = json!("https://app.example");
        c
    };
    let mut ok = Client::open(&side, None, &[], "").await;
    ok.request_ok("authenticate", json!({"token": tokens::hs256(&good())}))
        .await;
    for (claim, value) in [
        ("aud", json!("other")),
        ("iss", json!("https://evil.example")),
        ("aud", json!(null)),
        ("iss", json!(null)),
    ] {
        let mut c = good();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(claim);
        } else {
            c[claim] = value;
        }
        assert_refused(&side, tokens::hs256(&c)).await;
    }
}
