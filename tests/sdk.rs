//! The JavaScript client (clients/js, built to dist/) against real sidecars:
//! its behaviours (`clients/js/it/sdk.test.mjs`) and the end-to-end
//! convergence run (`clients/js/it/convergence.mjs`), for which this harness
//! injects the faults the script asks for: SIGKILL a sidecar (restarted on
//! the same port), restart Redis (AOF). Then it checks the stream: every
//! committed edit is in it exactly once, every rejected one not at all.
//!
//! Needs node and the built client (`scripts/build-client.sh`, which
//! `scripts/test.sh` runs). `RTSYNC_CONVERGENCE_MS` and `RTSYNC_SEED` set a
//! longer or different run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::tokens::{claims, hs256, now_secs};
use support::{RedisServer, Sidecar};

fn js_dir() -> PathBuf {
    support::node::dir("clients/js")
}

/// Whether the client is built (see `support::node::ready`).
fn client_built() -> bool {
    support::node::ready(
        &js_dir().join("dist/index.js"),
        "run scripts/build-client.sh",
    )
}

/// Tokens of the test users: every table read-write except `t-readonly`
/// and `conv-ro`, which they may only read; `outsider`, who may use only
/// `t-open`; and one expired token.
fn tokens() -> String {
    let mut out = serde_json::Map::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let mut c = claims(user);
        c["tables"] = json!({"*": "rw", "t-readonly": "r", "conv-ro": "r"});
        out.insert(user.into(), json!(hs256(&c)));
    }
    let mut outsider = claims("outsider");
    outsider["tables"] = json!({"t-open": "rw"});
    out.insert("outsider".into(), json!(hs256(&outsider)));
    let mut expired = claims("late");
    expired["exp"] = json!(now_secs() - 3600);
    out.insert("expired".into(), json!(hs256(&expired)));
    Value::Object(out).to_string()
}

fn urls(sidecars: &[&Sidecar]) -> String {
    sidecars
        .iter()
        .map(|s| s.ws_url())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_behaviours_against_real_sidecars() {
    if !client_built() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "sdk-a", &[]).await;
    let b = Sidecar::start(&redis, "sdk-b", &[]).await;
    let (urls, tokens) = (urls(&[&a, &b]), tokens());
    let env = vec![("RTSYNC_URLS", urls), ("RTSYNC_TOKENS", tokens)];
    let passed = support::node::run_tests(js_dir(), &["it/sdk.test.mjs"], env).await;
    assert!(passed, "SDK tests failed");
    drop((a, b));
}

#[allow(clippy::too_many_lines)] // one scenario, end to end (predates the 80-line rule)
#[tokio::test(flavor = "multi_thread")]
async fn every_live_table_converges_under_faults() {
    if !client_built() {
        return;
    }
    let mut redis = if support::redis_server::cluster_mode() {
        RedisServer::start().await
    } else {
        RedisServer::start_with(true).await
    };
    let mut sidecars = [
        Sidecar::start(&redis, "conv-a", &[]).await,
        Sidecar::start(&redis, "conv-b", &[]).await,
        Sidecar::start(&redis, "conv-c", &[]).await,
    ];
    // Redis restarts only where there is one Redis to restart.
    let faults = if redis.is_cluster() {
        "kill-sidecar-0,drop-all,kill-sidecar-1"
    } else {
        "kill-sidecar-0,restart-redis,kill-sidecar-1,restart-redis"
    };
    let summary_path = std::env::temp_dir().join(format!(
        "rtsync-convergence-{}-{}.json",
        std::process::id(),
        support::redis_server::rand_suffix()
    ));
    let duration = std::env::var("RTSYNC_CONVERGENCE_MS").unwrap_or_else(|_| "30000".into());
    let seed = std::env::var("RTSYNC_SEED").unwrap_or_else(|_| "20261125".into());
    let mut child = Command::new("node")
        .arg("it/convergence.mjs")
        .current_dir(js_dir())
        .env("RTSYNC_URLS", urls(&sidecars.iter().collect::<Vec<_>>()))
        .env("RTSYNC_TOKENS", tokens())
        .env("RTSYNC_SEED", &seed)
        .env("RTSYNC_DURATION_MS", &duration)
        .env("RTSYNC_FAULTS", faults)
        .env("RTSYNC_SUMMARY", &summary_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Serve fault requests until the script closes its stdout.
    while let Some(line) = rx.recv().await {
        let Some(kind) = line.strip_prefix("FAULT ") else {
            eprintln!("{line}");
            continue;
        };
        eprintln!("[harness] fault: {kind}");
        match kind {
            "restart-redis" => redis.restart().await,
            "drop-all" => {
                // Cluster: restart every sidecar at once instead.
                for s in sidecars.iter_mut() {
                    s.kill_and_restart(&redis, &[]).await;
                }
            }
            k if k.starts_with("kill-sidecar-") => {
                let i: usize = k["kill-sidecar-".len()..].parse().expect("sidecar index");
                sidecars[i].kill_and_restart(&redis, &[]).await;
            }
            other => panic!("unknown fault {other}"),
        }
        let _ = writeln!(stdin, "OK");
        let _ = stdin.flush();
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait node");
    assert!(
        status.success(),
        "the convergence run failed (see its output)"
    );

    // Every committed edit is in the stream exactly once; a rejected one never.
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_path).expect("summary"))
        .expect("summary json");
    let mut in_stream: HashMap<String, usize> = HashMap::new();
    let mut conn = redis.conn().await;
    for table in ["conv", "conv-ro"] {
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(format!("rts:{{{table}}}:events"))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .expect("XRANGE");
        for (_, fields) in rtsync::store::tailer::entries(reply) {
            if let Some((_, v)) = fields.iter().find(|(k, _)| k == "clientChangeId") {
                *in_stream
                    .entry(String::from_utf8_lossy(v).into_owned())
                    .or_default() += 1;
            }
        }
    }
    let settled = summary["settled"].as_array().expect("settled edits");
    assert_eq!(settled.len() as u64, summary["made"].as_u64().unwrap());
    for edit in settled {
        let id = edit["clientChangeId"].as_str().unwrap();
        let rejected = edit["status"] == "rejected" || edit["originalStatus"] == "rejected";
        let times = in_stream.get(id).copied().unwrap_or(0);
        if rejected {
            assert_eq!(times, 0, "rejected edit {edit} is not in the stream");
        } else {
            assert_eq!(times, 1, "committed edit {edit} is in the stream once");
        }
    }
    let _ = std::fs::remove_file(&summary_path);
    eprintln!(
        "[harness] {} edits settled, {} in the stream",
        settled.len(),
        in_stream.len()
    );
}
