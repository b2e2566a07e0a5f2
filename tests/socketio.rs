//! The seed's Socket.IO frontend (`tests/socketio/seed.test.mjs`, on the
//! npm `socket.io-client`) against two real sidecars and one Redis
//! (docs/protocol.md section 10).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use support::tokens::{claims, hs256};
use support::{RedisServer, Sidecar};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/socketio")
}

/// Whether the npm packages are installed; without them the test is
/// skipped only when the machine opted out of the JavaScript tests.
fn installed() -> bool {
    if dir().join("node_modules/socket.io-client").exists() {
        return true;
    }
    if std::env::var_os("RTSYNC_SKIP_BROWSER").is_some() {
        eprintln!("tests/socketio has no node_modules and RTSYNC_SKIP_BROWSER is set: skipping");
        return false;
    }
    panic!("tests/socketio/node_modules is missing: run scripts/ensure-browser.sh");
}

fn tokens() -> String {
    let mut out = serde_json::Map::new();
    for user in ["alice", "bob", "carol"] {
        let mut c = claims(user);
        c["tables"] = json!({"*": "rw"});
        out.insert(user.into(), json!(hs256(&c)));
    }
    Value::Object(out).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_socketio_frontend_works_against_two_sidecars() {
    if !installed() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "sio-a", &[]).await;
    let b = Sidecar::start(&redis, "sio-b", &[]).await;
    let urls = format!("{},{}", a.http_url(), b.http_url());
    let status = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args([
                "--test",
                "--test-concurrency=1",
                "--test-timeout=60000",
                // Parked long-polling requests would hold the process.
                "--test-force-exit",
                "seed.test.mjs",
            ])
            .current_dir(dir())
            .env("RTSYNC_HTTP_URLS", urls)
            .env("RTSYNC_TOKENS", tokens())
            .status()
    })
    .await
    .expect("join")
    .expect("run node");
    assert!(status.success(), "Socket.IO tests failed");
    drop((a, b));
}
