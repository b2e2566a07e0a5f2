//! examples/postgres-sink end to end: a real PostgreSQL, Redis, two
//! sidecars, two `rtsync sink` processes and the example's receiver (Node
//! with `pg`). The app's existing rows are seeded into rtsync through the
//! seed route; users edit over WebSocket on both sidecars while the test
//! SIGKILLs the sink that owns the table and then the receiver, and starts
//! them again. PostgreSQL must end with exactly what `load_records`
//! returns: every record and field, by version.
//!
//! Needs PostgreSQL's server binaries and the example's npm packages
//! (`scripts/ensure-postgres.sh`, run by `scripts/test.sh`); set
//! RTSYNC_SKIP_POSTGRES=1 (or RTSYNC_SKIP_BROWSER=1, for a machine without
//! Node.js) to skip it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::postgres::Postgres;
use support::{wait_for, Client, RedisServer, Sidecar};

const SECRET: &str = "postgres-example-signing-secret";
const TABLE: &str = "tasks";
const AUTH: (&str, &str) = ("Authorization", "Bearer test-api-token-0123");

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/postgres-sink")
}

/// A child process killed when the test ends, passing or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example's receiver on `port` (0: any); returns it and its port.
fn receiver(pg: &Postgres, port: u16) -> (Killed, u16) {
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(example_dir())
        .env("DATABASE_URL", pg.url())
        .env("RTSYNC_SINK_SECRET", SECRET)
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node server.mjs");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    let child = Killed(child);
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .expect("the receiver's port");
    (child, port)
}

/// What PostgreSQL holds for the table, as load_records would say it.
fn pg_state(pg: &Postgres) -> Vec<Value> {
    let out = pg.psql(&format!(
        "SELECT coalesce(json_agg(json_build_object('recordId', r.record_id, 'version', r.version, 'deleted', r.deleted,
           'fields', coalesce((SELECT jsonb_object_agg(f.field_id, f.value) FROM field_values f
                               WHERE f.table_id = r.table_id AND f.record_id = r.record_id), '{{}}'::jsonb))
           ORDER BY r.record_id), '[]') FROM records r WHERE r.table_id = '{TABLE}'"
    ));
    serde_json::from_str::<Vec<Value>>(&out).expect("json from psql")
}

/// Waits (a minute at most) until PostgreSQL holds exactly `expected`.
async fn until_pg_equals(pg: &Postgres, expected: &[Value]) {
    let got = wait_for(
        "PostgreSQL equal to load_records",
        Duration::from_secs(60),
        || async {
            let got = pg_state(pg);
            (got == expected).then_some(got)
        },
    )
    .await;
    assert_eq!(got, expected);
}

/// Every record rtsync holds for the table (the backends' route of load_records).
fn rtsync_state(side: &Sidecar) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/api/v1/sync/tables/{TABLE}/records?limit=1000{after}");
        let (status, body) = side.http("GET", &path, &[AUTH], "");
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).expect("records page");
        out.extend(
            page["data"]["records"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        match page["data"]["next"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => return out,
        }
    }
}

/// Whether the example's tests are skipped here (no PostgreSQL or Node.js
/// wanted, or the cluster pass, whose Redis the example does not use).
fn skipped() -> bool {
    let skip = ["RTSYNC_SKIP_POSTGRES", "RTSYNC_SKIP_BROWSER"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if skip || support::cluster_mode() {
        eprintln!("skipping the PostgreSQL example (RTSYNC_SKIP_POSTGRES, RTSYNC_SKIP_BROWSER: no Node.js, or the cluster pass)");
    }
    skip || support::cluster_mode()
}

#[allow(clippy::too_many_lines)] // one scenario, end to end (predates the 80-line rule)
#[tokio::test(flavor = "multi_thread")]
async fn postgres_ends_with_exactly_the_state_rtsync_holds() {
    if skipped() {
        return;
    }
    let pg = Postgres::start();
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "side-a", &[]).await;
    let b = Sidecar::start(&redis, "side-b", &[]).await;
    let (mut app, port) = receiver(&pg, 0);
    // The app's existing rows, at the app's versions.
    for i in 0..10 {
        pg.psql(&format!(
            "INSERT INTO records VALUES ('{TABLE}', 'r{i:02}', 5, false);
             INSERT INTO field_values VALUES ('{TABLE}', 'r{i:02}', 'name', '\"task {i}\"'), ('{TABLE}', 'r{i:02}', 'n', '{i}');"
        ));
    }
    let seeded = Command::new("node")
        .arg("seed.mjs")
        .current_dir(example_dir())
        .env("DATABASE_URL", pg.url())
        .env("RTSYNC_URL", format!("http://{}", a.addr))
        .env("RTSYNC_API_TOKEN", "test-api-token-0123")
        .env("TABLE_ID", TABLE)
        .output()
        .expect("run node seed.mjs");
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let summary: Value = serde_json::from_slice(&seeded.stdout).expect("seed summary");
    assert_eq!(summary["written"], 10);

    let url = format!("http://127.0.0.1:{port}/rtsync-events");
    let env = [
        ("RTS_SINK_URL", url.as_str()),
        ("RTS_SINK_SECRET", SECRET),
        ("RTS_SINK_BATCH", "20"),
    ];
    let mut sinks = [
        Sidecar::start_sink(&redis, "sink-1", &env).await,
        Sidecar::start_sink(&redis, "sink-2", &env).await,
    ];

    let mut writers = [
        Client::connect(&a, "ann").await,
        Client::connect(&b, "bob").await,
    ];
    let mut conn = redis.conn().await;
    for i in 0..300usize {
        let record = format!("r{:02}", (i * 5) % 14);
        let change = match i % 23 {
            5 => json!({"type": "delete", "recordId": record, "tableId": TABLE}),
            11 => json!({"type": "create", "recordId": record, "tableId": TABLE,
                "changes": [{"fieldId": "name", "newValue": format!("again {i}")}]}),
            _ => {
                let field = ["name", "n", "done", "tags"][i % 4];
                let value = [
                    json!(format!("v{i}")),
                    json!(i),
                    json!(i % 2 == 0),
                    Value::Null,
                ][(i / 4) % 4]
                    .clone();
                json!({"type": "update", "recordId": record, "tableId": TABLE,
                    "changes": [{"fieldId": field, "newValue": value}]})
            }
        };
        // Deletes of deleted records and creates of live ones are rejected: fine.
        let _ = writers[i % 2].request("record_change", change).await;
        if i == 100 {
            // The sink that owns the table dies mid-stream.
            let owner: String = redis::cmd("GET")
                .arg(format!("rts:{{{TABLE}}}:sink-lease"))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            let which = if owner == "sink-2" { 1 } else { 0 };
            sinks[which].signal("KILL");
            let _ = sinks[which].wait_exit(Duration::from_secs(5)).await;
            sinks[which] = Sidecar::start_sink(&redis, &format!("sink-{}", which + 1), &env).await;
        }
        if i == 200 {
            // Then the app's receiver, restarted on the same port.
            drop(app);
            app = receiver(&pg, port).0;
        }
        if i % 60 == 30 {
            // The base is renamed now and then (a base event, its own stream).
            support::rename_base(&a, "b1", &format!("Plan {i}"));
        }
    }
    wait_for(
        "the last base rename in PostgreSQL",
        Duration::from_secs(60),
        || async {
            let name = pg.psql(
                "SELECT value #>> '{}' FROM base_fields WHERE base_id = 'b1' AND field_id = 'name'",
            );
            let version = pg.psql("SELECT version FROM bases WHERE base_id = 'b1'");
            (name.trim() == "Plan 270" && version.trim() == "5").then_some(())
        },
    )
    .await;
    let expected = rtsync_state(&a);
    assert!(expected.len() >= 14, "records of the table");
    until_pg_equals(&pg, &expected).await;
    let deleted = expected.iter().filter(|r| r["deleted"] == true).count();
    eprintln!(
        "PostgreSQL holds {} records ({deleted} deleted), equal to rtsync",
        expected.len()
    );
    drop(app);
}

/// The example across a Redis failover: the primary (behind three
/// Sentinels) is SIGKILLed mid-stream; the sidecars and the sink follow
/// the new primary, writers resend what was not answered (same
/// `clientChangeId`), and PostgreSQL ends equal to what rtsync holds.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_ends_equal_to_rtsync_across_a_redis_failover() {
    if skipped() {
        return;
    }
    use support::sentinel::{SentinelSet, MASTER};
    let pg = Postgres::start();
    let mut set = SentinelSet::start().await;
    let addrs = set.addrs();
    let redis_env = [
        ("RTS_REDIS_SENTINELS", addrs.as_str()),
        ("RTS_REDIS_MASTER_NAME", MASTER),
        ("RTS_DURABLE_WRITES", "replica"),
    ];
    let a = Sidecar::start_url("redis://127.0.0.1:1", "fo-pg-a", &redis_env).await;
    let b = Sidecar::start_url("redis://127.0.0.1:1", "fo-pg-b", &redis_env).await;
    let (app, port) = receiver(&pg, 0);
    let url = format!("http://127.0.0.1:{port}/rtsync-events");
    let mut sink_env = vec![
        ("RTS_SINK_URL", url.as_str()),
        ("RTS_SINK_SECRET", SECRET),
        ("RTS_SINK_BATCH", "20"),
    ];
    sink_env.extend_from_slice(&redis_env[..2]);
    let _sink = Sidecar::start_sink_url("redis://127.0.0.1:1", "fo-pg-sink", &sink_env).await;
    let mut writers = [
        Client::connect(&a, "ann").await,
        Client::connect(&b, "bob").await,
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for i in 0..120usize {
        let record = format!("r{:02}", i % 9);
        let field = ["name", "n", "done"][i % 3];
        let change = json!({"type": "update", "recordId": record, "tableId": TABLE,
            "changes": [{"fieldId": field, "newValue": i}], "clientChangeId": format!("c{i}")});
        // Resent (same clientChangeId) until answered: timeout or
        // unavailable while the primary is replaced.
        while writers[i % 2]
            .request("record_change", change.clone())
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "writes did not resume"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if i == 60 {
            let old = set.primary_port().await.expect("a primary");
            set.server(old).kill();
        }
    }
    let expected = rtsync_state(&a);
    assert_eq!(expected.len(), 9, "records of the table");
    until_pg_equals(&pg, &expected).await;
    drop(app);
}
