//! Other services writing to table streams directly (docs/protocol.md section 7):
//! their entries are delivered like any other; malformed ones are skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::client::{change, Client};
use support::{Cluster, RedisServer, Sidecar};

const LONG: Duration = Duration::from_secs(20);

async fn xadd(redis: &RedisServer, table: &str, fields: &[(&str, Vec<u8>)]) -> String {
    let mut conn = redis.conn().await;
    let mut cmd = redis::cmd("XADD");
    cmd.arg(format!("rts:{{{table}}}:events")).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(v.as_slice());
    }
    cmd.query_async(&mut conn).await.unwrap()
}

fn base(entity: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("type", b"update".to_vec()),
        ("entityType", b"record".to_vec()),
        ("entityId", entity.as_bytes().to_vec()),
        ("userId", b"billing-service".to_vec()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_entry_with_json_changes_is_delivered() {
    let cluster = Cluster::start().await;
    let mut a = Client::subscribed(&cluster.a, "a", "t").await;
    let mut b = Client::subscribed(&cluster.b, "b", "t").await;
    let mut fields = base("r1");
    fields.push((
        "changes",
        br#"[{"fieldId":"f1","oldValue":1,"newValue":2}]"#.to_vec(),
    ));
    fields.push(("metadata", br#"{"reason":"invoice paid"}"#.to_vec()));
    fields.push(("version", b"7".to_vec()));
    let id = xadd(&cluster.redis, "t", &fields).await;
    for c in [&mut a, &mut b] {
        let e = &c.changes(1, LONG).await[0];
        assert_eq!(e["id"], id.as_str());
        assert_eq!(e["userId"], "billing-service");
        assert_eq!(e["changes"][0]["newValue"], 2);
        assert_eq!(e["metadata"]["reason"], "invoice paid");
        assert_eq!(e["version"], 7);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_entry_with_msgpack_changes_is_delivered() {
    let cluster = Cluster::start().await;
    let mut sub = Client::subscribed(&cluster.b, "b", "t").await;
    let mut fields = base("r2");
    let changes =
        rmp_serde::to_vec_named(&json!([{"fieldId": "f", "newValue": [1, "two"]}])).unwrap();
    fields.push(("changes", changes));
    fields.push((
        "metadata",
        rmp_serde::to_vec_named(&json!({"k": "v"})).unwrap(),
    ));
    let id = xadd(&cluster.redis, "t", &fields).await;
    let e = &sub.changes(1, LONG).await[0];
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["changes"][0]["newValue"], json!([1, "two"]));
    assert_eq!(e["metadata"]["k"], "v");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_entries_are_skipped_counted_and_never_stall_the_table() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut sub = Client::subscribed(&side, "s", "t").await;
    // Missing entityId; bad entityType; unparsable changes; bad version.
    xadd(
        &redis,
        "t",
        &[
            ("type", b"update".to_vec()),
            ("entityType", b"record".to_vec()),
            ("userId", b"u".to_vec()),
        ],
    )
    .await;
    let mut bad_type = base("r");
    bad_type[1].1 = b"spaceship".to_vec();
    xadd(&redis, "t", &bad_type).await;
    let mut bad_changes = base("r");
    bad_changes.push(("changes", b"[{\"fieldId\": ".to_vec()));
    xadd(&redis, "t", &bad_changes).await;
    let mut bad_version = base("r");
    bad_version.push(("version", b"seven".to_vec()));
    xadd(&redis, "t", &bad_version).await;
    let good = xadd(&redis, "t", &base("ok")).await;
    let got = sub.changes(1, LONG).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], good.as_str());
    assert!(sub.changes(1, Duration::from_millis(300)).await.is_empty());
    let (_, metrics) = side.get("/metrics");
    let skipped = metrics
        .lines()
        .find(|l| l.starts_with("rtsync_stream_entries_skipped_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert_eq!(skipped, 4.0);
    side.wait_for_log("skipping a malformed stream entry").await;
    // The table keeps flowing.
    let mut w = Client::connect(&side, "w").await;
    let ack = w
        .request_ok("record_change", change("t", "r", "f", json!(1)))
        .await;
    assert_eq!(sub.changes(1, LONG).await[0]["id"], ack["eventId"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_fcall_commits_are_delivered() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut sub = Client::subscribed(&side, "s", "t").await;
    let mut conn = redis.conn().await;
    let reply: String = redis::cmd("FCALL")
        .arg("rtsync_commit")
        .arg(2)
        .arg("rts:{t}:events")
        .arg("rts:{t}:rec:r1")
        .arg(r#"{"type":"create","entityType":"record","entityId":"r1","userId":"svc"}"#)
        .arg(r#"[{"fieldId":"f1","newValue":42}]"#)
        .arg("")
        .query_async(&mut conn)
        .await
        .unwrap();
    let result: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(result["status"], "applied");
    let e = &sub.changes(1, LONG).await[0];
    assert_eq!(e["id"], result["eventId"]);
    assert_eq!(e["changes"][0]["newValue"], 42);
}
