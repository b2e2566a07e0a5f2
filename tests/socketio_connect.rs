//! Every way a default-parser client connects to `/socket.io/`
//! (docs/protocol.md section 10): `40`, `40{}` and `40{"token"}`, in JWT
//! mode and in development mode. Without a token the CONNECT is accepted
//! and the client authenticates with the `authenticate` event, as on `/ws`.
//! (The msgpack parser's forms are covered with socket.io-client in
//! tests/socketio/seed.test.mjs.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::sio::Sio;
use support::{RedisServer, Sidecar};

const WAIT: Duration = Duration::from_secs(10);

/// Connects with `connect` (the CONNECT packet as sent) and checks the
/// answer; authenticates with `auth` when the CONNECT carried no token;
/// then a request works.
async fn connects(side: &Sidecar, connect: &str, auth: Option<Value>) {
    let mut sio = Sio::open(side).await;
    sio.send_text(connect).await;
    let answer = sio
        .packet("4", WAIT)
        .await
        .expect("an answer to the CONNECT");
    assert!(answer.starts_with("40{\"sid\":"), "{connect}: {answer}");
    if let Some(auth) = auth {
        let ack = sio.request(1, "authenticate", &auth).await.unwrap();
        assert!(ack["userId"].is_string(), "{connect}: {ack}");
    }
    let ack = sio
        .request(2, "subscribe_to_table", &json!({"tableId": "t"}))
        .await
        .unwrap();
    assert_eq!(ack["tableId"], "t", "{connect}: {ack}");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_jwt_mode_every_connect_form_works() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let token = support::tokens::token("u");
    let by_event = Some(json!({ "token": token }));
    connects(&side, "40", by_event.clone()).await;
    connects(&side, "40{}", by_event).await;
    connects(&side, &format!("40{}", json!({ "token": token })), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_development_mode_every_connect_form_works() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_AUTH", "none")]).await;
    let dev = Some(json!({"userId": "u", "userName": "U"}));
    connects(&side, "40", dev.clone()).await;
    connects(&side, "40{}", dev).await;
}
