//! The seed's Socket.IO frontend (`tests/socketio/seed.test.mjs`, on the
//! npm `socket.io-client`) against two real sidecars and one Redis
//! (docs/protocol.md section 10).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use support::tokens::{claims, hs256};
use support::{RedisServer, Sidecar};

fn tokens() -> String {
    let mut out = serde_json::Map::new();
    for user in ["alice", "bob", "carol"] {
        let mut c = claims(user);
        c["tables"] = json!({"*": "rw"});
        out.insert(user.into(), json!(hs256(&c)));
    }
    // Cannot see `salary`, cannot edit `status` (docs/protocol.md 2.1).
    let mut intern = claims("intern");
    intern["tables"] = json!({"*": {"access": "rw", "fields": {"salary": "none", "status": "r"}}});
    out.insert("intern".into(), json!(hs256(&intern)));
    Value::Object(out).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_socketio_frontend_works_against_two_sidecars() {
    let dir = support::node::dir("tests/socketio");
    let needed = dir.join("node_modules/socket.io-client");
    if !support::node::ready(&needed, "run scripts/ensure-browser.sh") {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "sio-a", &[]).await;
    let b = Sidecar::start(&redis, "sio-b", &[]).await;
    let urls = format!("{},{}", a.http_url(), b.http_url());
    let env = vec![("RTSYNC_HTTP_URLS", urls), ("RTSYNC_TOKENS", tokens())];
    let passed = support::node::run_tests(dir, &["seed.test.mjs"], env).await;
    assert!(passed, "Socket.IO tests failed");
    drop((a, b));
}
