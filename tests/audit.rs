//! The audit log (docs/protocol.md section 12): what is recorded, that the
//! chain finds tampering (`rtsync audit verify`), that a flood stays
//! bounded, and `GET /api/v1/audit`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as an operator (or an attacker) would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::client::{change, Client};
use support::tokens::now_secs;
use support::{RedisServer, Sidecar};

const WAIT: Duration = Duration::from_secs(10);

/// Every audit entry the API answers, oldest first.
fn entries(side: &Sidecar, query: &str) -> Vec<Value> {
    let (status, v) = side.api("GET", &format!("/api/v1/audit?{query}"), &Value::Null);
    assert_eq!(status, 200, "{v}");
    v["data"]["entries"].as_array().cloned().unwrap_or_default()
}

/// Waits for an entry of `action` that `pred` accepts.
async fn entry_of(side: &Sidecar, action: &str, pred: impl Fn(&Value) -> bool) -> Value {
    support::wait_for(action, WAIT, || async {
        entries(side, &format!("action={action}&limit=1000"))
            .into_iter()
            .find(|e| pred(e))
    })
    .await
}

/// `rtsync audit verify` against `redis`: its exit code and stdout.
fn verify(redis: &RedisServer) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rtsync"));
    cmd.env_clear()
        .env("RTS_REDIS_URL", redis.url())
        .env("RTS_LOG", "warn")
        .args(["audit", "verify"]);
    if redis.is_cluster() {
        cmd.env("RTS_REDIS_CLUSTER", "true");
    }
    let out = cmd.output().expect("run rtsync audit verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The raw audit stream: (id, fields in order).
async fn raw_stream(redis: &RedisServer) -> Vec<(String, Vec<String>)> {
    let mut conn = redis.conn().await;
    redis::cmd("XRANGE")
        .arg("rts:audit")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_is_audited_with_reason_and_address_never_the_token() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::open(&side, None, &[], "").await;
    let token = "not.a-valid-token.SECRETMARK";
    let err = c
        .request("authenticate", json!({"token": token}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "unauthenticated");
    let e = entry_of(&side, "auth_failed", |_| true).await;
    assert_eq!(e["addr"], "127.0.0.1");
    assert_eq!(e["detail"], "invalid");
    assert_eq!(e["sidecar"], "a");
    assert!(e.get("actor").is_none(), "{e}");
    let raw = format!("{:?}", raw_stream(&redis).await);
    assert!(!raw.contains("SECRETMARK"), "{raw}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_socketio_connect_is_audited() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut sio = support::sio::Sio::open(&side).await;
    let expired = support::tokens::hs256(
        &json!({"sub": "u1", "exp": now_secs() - 3600, "tables": {"*": "rw"}}),
    );
    sio.send_text(&format!("40{}", json!({"token": expired})))
        .await;
    let answer = sio.packet("44", Duration::from_secs(10)).await;
    assert!(answer.is_some(), "connect_error");
    let e = entry_of(&side, "auth_failed", |_| true).await;
    assert_eq!(e["detail"], "expired");
    assert!(!e.to_string().contains(&expired));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_api_token_is_audited_as_an_authentication_failure() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let (status, _) = side.http(
        "POST",
        "/api/v1/sync/cleanup",
        &[("Authorization", "Bearer wrong-token-SECRETMARK")],
        "",
    );
    assert_eq!(status, 401);
    let e = entry_of(&side, "auth_failed", |e| e["detail"] == "api_token").await;
    assert_eq!(e["addr"], "127.0.0.1");
    let raw = format!("{:?}", raw_stream(&redis).await);
    assert!(!raw.contains("SECRETMARK"), "{raw}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forbidden_write_is_audited_with_the_user() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let claims = json!({"sub": "reader", "exp": now_secs() + 3600, "tables": {"t": "r"}});
    let mut c = Client::connect_claims(&side, &claims, support::client::Enc::MsgPack).await;
    let err = c
        .request("record_change", change("t", "r1", "f", json!(1)))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "forbidden");
    let e = entry_of(&side, "request_refused", |e| e["outcome"] == "forbidden").await;
    assert_eq!(e["actor"], "reader");
    assert!(e["detail"].as_str().unwrap().contains("table t"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payload_too_large_is_audited_naming_the_limit() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_FRAME_BYTES", "1500")]).await;
    let mut c = Client::connect_json(&side, "u").await;
    let err = c
        .request(
            "record_change",
            change("t", "r", "f", json!("x".repeat(1300))),
        )
        .await
        .unwrap_err();
    assert_eq!(err["code"], "payload_too_large", "{err}");
    let e = entry_of(&side, "request_refused", |e| {
        e["outcome"] == "payload_too_large"
    })
    .await;
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("RTS_MAX_FRAME_BYTES"),
        "{e}"
    );
    assert!(!e.to_string().contains("xxxxxxxx"), "no values: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_is_audited_and_an_update_is_not() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&side, "u1").await;
    c.request_ok("record_change", change("t", "r1", "f", json!("v")))
        .await;
    let mut delete = change("t", "r1", "f", json!(null));
    delete["type"] = json!("delete");
    delete["changes"] = json!([]);
    c.request_ok("record_change", delete).await;
    let e = entry_of(&side, "record_deleted", |_| true).await;
    assert_eq!(e["actor"], "u1");
    assert_eq!(e["tableId"], "t");
    assert_eq!(e["recordId"], "r1");
    assert_eq!(e["outcome"], "applied");
    let all = entries(&side, "limit=1000");
    assert_eq!(all.len(), 1, "only the delete: {all:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_batch_cleanup_and_seed_are_audited_as_the_api_with_counts() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let batch = json!({"changes": [
        {"type": "update", "entityId": "r1", "tableId": "t", "userId": "svc", "changes": [{"fieldId": "f", "newValue": 1}]},
        {"type": "update", "entityId": "r2", "tableId": "t", "userId": "svc", "changes": [{"fieldId": "f", "newValue": 2}]},
    ]});
    assert_eq!(
        side.api("POST", "/api/v1/sync/batch-changes", &batch).0,
        200
    );
    assert_eq!(side.api("POST", "/api/v1/sync/cleanup", &json!({})).0, 200);
    let seed = json!({"records": [{"recordId": "s1", "version": 1, "fields": {"f": 1}}]});
    let (status, v) = side.api("POST", "/api/v1/sync/tables/t2/records", &seed);
    assert_eq!(status, 200, "{v}");
    let b = entry_of(&side, "api_batch_changes", |_| true).await;
    assert_eq!(b["actor"], "api");
    assert_eq!(b["tableId"], "t");
    assert_eq!(b["outcome"], "ok");
    assert!(
        b["detail"].as_str().unwrap().starts_with("2 changes"),
        "{b}"
    );
    let c = entry_of(&side, "api_cleanup", |_| true).await;
    assert_eq!(c["actor"], "api");
    let s = entry_of(&side, "api_seed", |_| true).await;
    assert_eq!(s["tableId"], "t2");
    assert_eq!(s["detail"], "written 1, skipped 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_4429_close_for_too_many_connections_is_audited() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_CONNECTIONS_PER_USER", "1")]).await;
    let _one = Client::connect(&side, "u").await;
    let mut two = Client::open(&side, None, &[], "").await;
    let token = support::tokens::token("u");
    let _ = two.request("authenticate", json!({"token": token})).await;
    assert_eq!(two.closed().await, Some(4429));
    let e = entry_of(&side, "connection_closed", |e| e["outcome"] == "4429").await;
    assert_eq!(e["addr"], "127.0.0.1");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("too many connections"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_requests_and_the_4429_for_sustained_abuse_are_audited() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_RATE_LIMIT", "5")]).await;
    let mut abuser = Client::connect(&side, "abuser").await;
    for _ in 0..60 {
        abuser
            .send("heartbeat", json!({"tableId": "t"}), None)
            .await;
    }
    assert_eq!(abuser.closed().await, Some(4429));
    let refused = entry_of(&side, "request_refused", |e| e["outcome"] == "rate_limited").await;
    assert_eq!(refused["actor"], "abuser");
    let closed = entry_of(&side, "connection_closed", |e| e["outcome"] == "4429").await;
    assert_eq!(closed["actor"], "abuser");
    assert_eq!(closed["detail"], "sustained rate-limit abuse");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_4408_eviction_is_audited() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_UNAUTHENTICATED_PER_IP", "1")]).await;
    let mut first = Client::open(&side, None, &[], "").await;
    let _second = Client::open(&side, None, &[], "").await;
    assert_eq!(first.closed().await, Some(4408));
    let e = entry_of(&side, "connection_closed", |e| e["outcome"] == "4408").await;
    assert_eq!(e["detail"], "evicted");
    assert_eq!(e["addr"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_4413_close_is_audited() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::open(&side, None, &[], "").await;
    c.send(
        "authenticate",
        json!({"token": "p".repeat(17 * 1024)}),
        Some(1),
    )
    .await;
    assert_eq!(c.closed().await, Some(4413));
    let e = entry_of(&side, "connection_closed", |e| e["outcome"] == "4413").await;
    assert_eq!(e["detail"], "large_frame_before_auth");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_without_authentication_is_audited() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(
        &redis,
        "a",
        &[("RTS_AUTH", "none"), ("RTS_CORS_ORIGINS", "*")],
    )
    .await;
    let e = entry_of(&side, "access_widened", |e| e["detail"] == "RTS_AUTH=none").await;
    assert_eq!(e["sidecar"], "a");
    entry_of(&side, "access_widened", |e| {
        e["detail"] == "RTS_CORS_ORIGINS=*"
    })
    .await;
}

/// A few entries in the chain (failed logins from the API).
async fn some_entries(side: &Sidecar, n: usize) {
    for _ in 0..n {
        side.http(
            "GET",
            "/api/v1/sync/stats",
            &[("Authorization", "Bearer wrong")],
            "",
        );
    }
    support::wait_for("entries written", WAIT, || async {
        (entries(side, "limit=1000").len() >= n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_an_intact_chain() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    some_entries(&side, 5).await;
    let (code, out) = verify(&redis);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok, 5 entries, from "), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_a_removed_entry() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    some_entries(&side, 5).await;
    let stream = raw_stream(&redis).await;
    let mut conn = redis.conn().await;
    let _: i64 = redis::cmd("XDEL")
        .arg("rts:audit")
        .arg(&stream[2].0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out) = verify(&redis);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("entry {} does not follow", stream[3].0)),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_a_forged_entry() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    some_entries(&side, 3).await;
    let stream = raw_stream(&redis).await;
    let last_hash = stream[2].1.last().unwrap().clone();
    let mut conn = redis.conn().await;
    let forged: String = redis::cmd("XADD")
        .arg("rts:audit")
        .arg("*")
        .arg(&[
            "prev",
            &last_hash,
            "ts",
            "1",
            "action",
            "api_cleanup",
            "outcome",
            "ok",
            "hash",
            "0000000000000000000000000000000000000000",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out) = verify(&redis);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("entry {forged} was changed")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_a_well_hashed_entry_appended_outside_the_function() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    some_entries(&side, 2).await;
    let stream = raw_stream(&redis).await;
    let last_hash = stream[1].1.last().unwrap().clone();
    let content = [
        ("prev", last_hash.as_str()),
        ("ts", "1"),
        ("action", "api_cleanup"),
        ("outcome", "ok"),
    ];
    let hash = rtsync::audit::verify::content_hash(
        &content
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>(),
    );
    let mut conn = redis.conn().await;
    let mut xadd = redis::cmd("XADD");
    xadd.arg("rts:audit").arg("*");
    for (k, v) in content {
        xadd.arg(k).arg(v);
    }
    let forged: String = xadd
        .arg("hash")
        .arg(&hash)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out) = verify(&redis);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{forged} was not appended by rtsync_audit")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_entries_removed_from_the_end() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    some_entries(&side, 3).await;
    let stream = raw_stream(&redis).await;
    let mut conn = redis.conn().await;
    let _: i64 = redis::cmd("XDEL")
        .arg("rts:audit")
        .arg(&stream[2].0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out) = verify(&redis);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("chain's head"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_failed_logins_from_one_address_is_bounded_by_the_rate() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_AUDIT_RATE_PER_MIN", "60")]).await;
    let started = Instant::now();
    let addr = side.addr;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                for _ in 0..2_500 {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(
                        b"GET /api/v1/sync/stats HTTP/1.0\r\nAuthorization: Bearer wrong\r\n\r\n",
                    )
                    .unwrap();
                    let mut out = Vec::new();
                    let _ = s.read_to_end(&mut out);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let bound = 60 + started.elapsed().as_secs() as usize + 1;
    let (_, metrics) = side.get("/metrics");
    let dropped = support::metric(
        &metrics,
        "rtsync_audit_dropped_total{reason=\"rate_limited\"}",
    );
    let written = entries(&side, "action=auth_failed&limit=1000").len();
    assert!(
        written >= 60 && written <= bound,
        "{written} entries (bound {bound})"
    );
    assert!(dropped >= (10_000 - bound) as f64, "dropped {dropped}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_from_many_sources_together_are_bounded_by_the_sidecars_share() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_AUDIT_RATE_PER_MIN", "1")]).await;
    let started = Instant::now();
    let users = 60;
    for i in 0..users {
        let claims =
            json!({"sub": format!("u{i}"), "exp": now_secs() + 3600, "tables": {"t": "r"}});
        let mut c = Client::connect_claims(&side, &claims, support::client::Enc::Json).await;
        let err = c
            .request("record_change", change("t", "r1", "f", json!(1)))
            .await
            .unwrap_err();
        assert_eq!(err["code"], "forbidden");
    }
    let share = 16 + started.elapsed().as_secs() as usize / 4 + 1;
    let dropped = support::wait_for("the dropped records counted", WAIT, || async {
        let (_, metrics) = side.get("/metrics");
        let n = support::metric(
            &metrics,
            "rtsync_audit_dropped_total{reason=\"rate_limited\"}",
        );
        (n >= (users - share) as f64).then_some(n)
    })
    .await;
    let written = entries(&side, "action=request_refused&limit=1000").len();
    assert!(
        written <= share,
        "{written} entries (share {share}), {dropped} dropped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_api_filters_by_action_and_user_and_pages_with_next() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    for user in ["u1", "u2"] {
        let mut c = Client::connect(&side, user).await;
        for r in ["r1", "r2"] {
            let id = format!("{user}-{r}");
            c.request_ok("record_change", change("t", &id, "f", json!(1)))
                .await;
            let mut delete = change("t", &id, "f", json!(null));
            delete["type"] = json!("delete");
            delete["changes"] = json!([]);
            c.request_ok("record_change", delete).await;
        }
    }
    some_entries(&side, 1).await;
    support::wait_for("4 deletes", WAIT, || async {
        (entries(&side, "action=record_deleted").len() == 4).then_some(())
    })
    .await;
    let mine = entries(&side, "action=record_deleted&user=u1");
    let records: Vec<&str> = mine
        .iter()
        .map(|e| e["recordId"].as_str().unwrap())
        .collect();
    assert_eq!(records, ["u1-r1", "u1-r2"]);
    let (_, page) = side.api(
        "GET",
        "/api/v1/audit?action=record_deleted&limit=3",
        &Value::Null,
    );
    assert_eq!(page["data"]["entries"].as_array().unwrap().len(), 3);
    let next = page["data"]["next"].as_str().unwrap().to_owned();
    let rest = entries(&side, &format!("action=record_deleted&since={next}"));
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["recordId"], "u2-r2");
    let (status, _) = side.api("GET", "/api/v1/audit?limit=100000", &Value::Null);
    assert_eq!(status, 400);
    let (status, _) = side.http("GET", "/api/v1/audit", &[], "");
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_queued_at_shutdown_is_written() {
    let redis = RedisServer::start().await;
    let mut side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::connect(&side, "u1").await;
    c.request_ok("record_change", change("t", "r1", "f", json!(1)))
        .await;
    let mut delete = change("t", "r1", "f", json!(null));
    delete["type"] = json!("delete");
    delete["changes"] = json!([]);
    c.request_ok("record_change", delete).await;
    side.signal("TERM");
    assert!(side.wait_exit(Duration::from_secs(15)).await.is_some());
    let stream = raw_stream(&redis).await;
    assert!(
        stream
            .iter()
            .any(|(_, f)| f.iter().any(|v| v == "record_deleted")),
        "{stream:?}"
    );
    let (code, out) = verify(&redis);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_delivers_the_audit_log_when_asked() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    some_entries(&side, 2).await;
    let receiver = support::receiver::Receiver::ok().await;
    let _sink = Sidecar::start_sink(
        &redis,
        "sink1",
        &[
            ("RTS_SINK_URL", receiver.url.as_str()),
            ("RTS_SINK_AUDIT", "true"),
        ],
    )
    .await;
    some_entries(&side, 3).await;
    let delivered = support::wait_for("5 audit entries delivered", WAIT, || async {
        let audit: Vec<Value> = receiver
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| r.body["audit"].as_array().cloned().unwrap_or_default())
            .collect();
        (audit.len() >= 5).then_some(audit)
    })
    .await;
    assert_eq!(delivered.len(), 5, "each once: {delivered:?}");
    let stored = entries(&side, "limit=1000");
    assert_eq!(delivered, stored, "as the API answers them, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_leaves_the_audit_log_alone_by_default() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    some_entries(&side, 2).await;
    let receiver = support::receiver::Receiver::ok().await;
    let _sink =
        Sidecar::start_sink(&redis, "sink1", &[("RTS_SINK_URL", receiver.url.as_str())]).await;
    let mut c = Client::connect(&side, "u1").await;
    c.request_ok("record_change", change("t", "r1", "f", json!(1)))
        .await;
    support::wait_for("the table's batch", WAIT, || async {
        (!receiver.delivered_ids().is_empty()).then_some(())
    })
    .await;
    assert!(receiver
        .received()
        .iter()
        .all(|r| r.body.get("audit").is_none()));
}
