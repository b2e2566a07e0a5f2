//! A non-JavaScript Socket.IO client, python-socketio 5
//! (`tests/socketio/python_client.py`), against two real sidecars and one
//! Redis: a JWT in the CONNECT auth, subscribe with an ack, a write, a
//! masked event for an intern, a drop and an exact recovery, over WebSocket
//! and long-polling. Its virtualenv is made by
//! `scripts/ensure-python-client.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::tokens::{claims, hs256};
use support::{RedisServer, Sidecar};

fn tokens() -> String {
    let mut alice = claims("alice");
    alice["tables"] = json!({"*": "rw"});
    let mut intern = claims("intern");
    intern["tables"] = json!({"*": {"access": "rw", "fields": {"salary": "none"}}});
    json!({"alice": hs256(&alice), "intern": hs256(&intern)}).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_socketio_connects_subscribes_writes_is_masked_and_recovers() {
    let python = support::node::dir("tests/socketio/.venv/bin/python");
    if !support::node::ready(&python, "run scripts/ensure-python-client.sh") {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "py-a", &[]).await;
    let b = Sidecar::start(&redis, "py-b", &[]).await;
    let urls = format!("{},{}", a.http_url(), b.http_url());
    let script = support::node::dir("tests/socketio/python_client.py");
    let tokens: Value = serde_json::from_str(&tokens()).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("RTSYNC_HTTP_URLS", urls)
            .env("RTSYNC_TOKENS", tokens.to_string())
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python client failed: {stderr}");
    assert!(stderr.contains("ran"), "{stderr}");
    drop((a, b));
}
