//! Browser tests of the demo grid (tests/browser/grid.test.mjs) and of a
//! socket.io-client page beside it (tests/browser/socketio.test.mjs): Playwright
//! driving Debian's chromium against two sidecars on one Redis. Needs node,
//! `npm install` in clients/js (then `npm run build`) and tests/browser, and
//! /usr/bin/chromium; `scripts/test.sh` sets all of that up. Set
//! RTSYNC_SKIP_BROWSER=1 to skip on a machine without a browser.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use support::{RedisServer, Sidecar};

#[tokio::test(flavor = "multi_thread")]
async fn demo_grid_in_a_real_browser() {
    assert!(
        browser_tests(&["grid.test.mjs", "socketio.test.mjs"]).await,
        "browser tests failed"
    );
}

/// tests/browser/compression.test.mjs: the demo's WebSocket negotiates
/// permessage-deflate in Chromium (its handshake answer, seen through the
/// DevTools protocol) and a long edit converges.
#[tokio::test(flavor = "multi_thread")]
async fn demo_negotiates_permessage_deflate_in_chromium_and_converges() {
    assert!(
        browser_tests(&["compression.test.mjs"]).await,
        "browser compression test failed"
    );
}

/// Runs `files` of tests/browser against two demo sidecars on one Redis;
/// whether they passed (true when skipped).
async fn browser_tests(files: &[&str]) -> bool {
    if std::env::var_os("RTSYNC_SKIP_BROWSER").is_some() {
        eprintln!("RTSYNC_SKIP_BROWSER set: skipping the browser tests");
        return true;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let demo_dir = format!("{root}/demo");
    assert!(
        std::path::Path::new(&format!("{demo_dir}/rtsync.js")).exists(),
        "demo/rtsync.js is missing: cd clients/js && npm install && npm run build"
    );
    let redis = RedisServer::start().await;
    let env = [
        ("RTS_AUTH", "none"),
        ("RTS_JWT_SECRET", ""),
        // As scripts/start.sh: no API token, so the seeding page stores the
        // "My tasks" view through the HTTP API itself.
        ("RTS_API_TOKEN", ""),
        ("RTS_DEMO", "true"),
        ("RTS_DEMO_DIR", demo_dir.as_str()),
        ("RTS_RECENT_CHANGES", "500"),
        // The Socket.IO page is served from another origin.
        ("RTS_CORS_ORIGINS", "*"),
    ];
    let a = Sidecar::start(&redis, "browser-a", &env).await;
    let b = Sidecar::start(&redis, "browser-b", &env).await;
    let mut args = vec!["--test", "--test-concurrency=1", "--test-force-exit"];
    args.extend_from_slice(files);
    let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    let status = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(&args)
            .current_dir(format!("{root}/tests/browser"))
            .env("RTSYNC_DEMO_A", format!("http://{}", a.addr))
            .env("RTSYNC_DEMO_B", format!("http://{}", b.addr))
            .status()
            .map(|s| (s, a, b))
    })
    .await
    .expect("join");
    let (status, _a, _b) = status.expect("run node (is Node.js installed?)");
    status.success()
}
