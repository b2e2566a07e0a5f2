//! `rtsync sink` (docs/protocol.md section 9) against real Redis servers and a
//! receiver in the test: stream order, signatures, retries, the dead-letter
//! stream, discovery of producers' streams, leases and takeover of a killed
//! sink, spread over live sinks, and SIGTERM finishing the batch in flight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::receiver::Receiver;
use support::{wait_for, Client, RedisServer, Sidecar};

const LONG: Duration = Duration::from_secs(30);
const SECRET: &str = "sink-signing-secret";

async fn sink(
    redis: &RedisServer,
    id: &str,
    receiver: &Receiver,
    extra: &[(&str, &str)],
) -> Sidecar {
    let mut env = vec![
        ("RTS_SINK_URL", receiver.url.as_str()),
        ("RTS_SINK_SECRET", SECRET),
    ];
    env.extend_from_slice(extra);
    Sidecar::start_sink(redis, id, &env).await
}

/// Commits `n` changes to `table` through a sidecar; returns the stream ids.
async fn commit(
    side: &Sidecar,
    table: &str,
    n: usize,
    value: impl Fn(usize) -> Value,
) -> Vec<String> {
    let mut c = Client::connect(side, "writer").await;
    let mut ids = Vec::new();
    for i in 0..n {
        let ack = c
            .request_ok(
                "record_change",
                support::client::change(table, &format!("r{}", i % 7), "f", value(i)),
            )
            .await;
        ids.push(ack["eventId"].as_str().expect("eventId").to_owned());
    }
    ids
}

async fn pending(redis: &RedisServer, table: &str) -> u64 {
    let mut conn = redis.conn().await;
    let reply: Value = redis::cmd("XPENDING")
        .arg(format!("rts:{{{table}}}:events"))
        .arg("rtsync-sink")
        .query_async::<redis::Value>(&mut conn)
        .await
        .map(|v| match v {
            redis::Value::Array(parts) => match parts.first() {
                Some(redis::Value::Int(n)) => json!(n),
                _ => json!(0),
            },
            _ => json!(0),
        })
        .unwrap_or(json!(-1));
    reply.as_u64().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_is_delivered_in_stream_order_signed_and_acknowledged() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "side", &[]).await;
    let ids = commit(&side, "t1", 250, |i| json!(i)).await;
    let receiver = Receiver::ok().await;
    let _sink = sink(&redis, "sink-a", &receiver, &[("RTS_SINK_BATCH", "100")]).await;
    wait_for("every event delivered", LONG, || async {
        (receiver.delivered_ids().len() >= 250).then_some(())
    })
    .await;
    assert_eq!(receiver.delivered_ids(), ids, "once each, in stream order");
    for r in receiver.received() {
        assert_eq!(r.body["tableId"], "t1");
        assert!(
            r.body["events"].as_array().unwrap().len() <= 100,
            "batches of RTS_SINK_BATCH"
        );
        let expected = rtsync::sink::deliver::sign(SECRET, &r.raw);
        assert_eq!(
            r.signature.as_deref(),
            Some(expected.as_str()),
            "signed body"
        );
        // The timestamped signature: recent, and over "<ts>." + body.
        let ts = r.timestamp.clone().expect("X-Rtsync-Timestamp");
        let age = support::tokens::now_secs().abs_diff(ts.parse::<u64>().unwrap());
        assert!(age < 60, "timestamp {ts}");
        let stamped = [format!("{ts}.").as_bytes(), &r.raw[..]].concat();
        let expected = rtsync::sink::deliver::sign(SECRET, &stamped);
        assert_eq!(r.timestamp_signature.as_deref(), Some(expected.as_str()));
    }
    let first = &receiver.received()[0].body["events"][0];
    assert_eq!(first["entityId"], "r0");
    assert_eq!(first["changes"][0]["newValue"], 0);
    wait_for("acknowledged", LONG, || async {
        (pending(&redis, "t1").await == 0).then_some(())
    })
    .await;
}

#[allow(clippy::too_many_lines)] // one scenario, end to end (predates the 80-line rule)
#[tokio::test(flavor = "multi_thread")]
async fn failures_are_retried_in_order_and_a_refused_batch_goes_to_the_dead_letter_stream() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "side", &[]).await;
    // 3 batches of 5: the middle one carries a poison value.
    let ids = commit(&side, "t2", 15, |i| {
        if i == 7 {
            json!("poison")
        } else {
            json!(i)
        }
    })
    .await;
    let receiver = Receiver::start(|n, body| {
        // A batch that writes the poison value (a later change of that
        // record carries it as its oldValue, and is fine).
        let poison = body["events"]
            .as_array()
            .is_some_and(|es| es.iter().any(|e| e["changes"][0]["newValue"] == "poison"));
        match (n, poison) {
            (0..=2, _) => (503, Duration::ZERO), // the app is down for a while
            (3, _) => (200, Duration::from_secs(30)), // then one answer takes too long
            (_, true) => (422, Duration::ZERO),  // a batch it will never take
            _ => (200, Duration::ZERO),
        }
    })
    .await;
    let _sink = sink(
        &redis,
        "sink-a",
        &receiver,
        &[("RTS_SINK_BATCH", "5"), ("RTS_SINK_TIMEOUT_MS", "500")],
    )
    .await;
    wait_for("the batches after the poison one", LONG, || async {
        (receiver.delivered_ids().len() >= 10).then_some(())
    })
    .await;
    let mut expected = ids[..5].to_vec();
    expected.extend_from_slice(&ids[10..]);
    assert_eq!(
        receiver.delivered_ids(),
        expected,
        "in order, the refused batch left out"
    );
    let first_bodies: Vec<String> = receiver
        .received()
        .iter()
        .take(4)
        .map(|r| {
            r.body["events"][0]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        first_bodies.iter().all(|b| *b == ids[0]),
        "the same first batch was retried: {first_bodies:?}"
    );
    let mut conn = redis.conn().await;
    let dead: redis::Value = redis::cmd("XRANGE")
        .arg("rts:{t2}:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let dead = rtsync::store::tailer::entries(dead);
    assert_eq!(dead.len(), 5, "the refused batch's entries");
    let field = |e: &rtsync::store::tailer::Entry, k: &str| {
        e.1.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(
        field(&dead[0], "originalId").as_deref(),
        Some(ids[5].as_str())
    );
    assert_eq!(field(&dead[0], "status").as_deref(), Some("422"));
    assert_eq!(
        field(&dead[0], "reason").as_deref(),
        Some("refused: bad event")
    );
    assert!(
        field(&dead[0], "changes").is_some(),
        "the original fields are kept"
    );
    wait_for("acknowledged", LONG, || async {
        (pending(&redis, "t2").await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_producers_write_directly_are_found_and_delivered() {
    let redis = RedisServer::start().await;
    let receiver = Receiver::ok().await;
    let _sink = sink(&redis, "sink-a", &receiver, &[]).await;
    let mut conn = redis.conn().await;
    let id: String = redis::cmd("XADD")
        .arg("rts:{direct}:events")
        .arg("*")
        .arg("type")
        .arg("update")
        .arg("entityType")
        .arg("record")
        .arg("entityId")
        .arg("r1")
        .arg("userId")
        .arg("svc-billing")
        .arg("version")
        .arg(4)
        .arg("changes")
        .arg(r#"[{"fieldId":"paid","newValue":true}]"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    wait_for("the producer's event", LONG, || async {
        (receiver.delivered_ids() == [id.clone()]).then_some(())
    })
    .await;
    let body = &receiver.received()[0].body;
    assert_eq!(body["tableId"], "direct");
    assert_eq!(body["events"][0]["userId"], "svc-billing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_sinks_tables_and_unacknowledged_batch_are_taken_over() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "side", &[]).await;
    let ids = commit(&side, "t3", 20, |i| json!(i)).await;
    // The first POST never gets an answer: its sink dies with it in flight.
    let receiver = Receiver::start(|n, _| {
        if n == 0 {
            (200, Duration::from_secs(600))
        } else {
            (200, Duration::ZERO)
        }
    })
    .await;
    let mut a = sink(&redis, "sink-a", &receiver, &[("RTS_SINK_BATCH", "10")]).await;
    wait_for("the first POST", LONG, || async {
        (receiver.arrived.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    let _b = sink(&redis, "sink-b", &receiver, &[("RTS_SINK_BATCH", "10")]).await;
    let mut conn = redis.conn().await;
    let owner: String = redis::cmd("GET")
        .arg("rts:{t3}:sink-lease")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(owner, "sink-a");
    a.signal("KILL");
    let killed = Instant::now();
    wait_for("sink-b delivers everything", LONG, || async {
        (receiver.delivered_ids().len() >= 20).then_some(())
    })
    .await;
    let took = killed.elapsed();
    eprintln!(
        "takeover: every entry delivered {} ms after SIGKILL",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(15),
        "taken over within seconds ({took:?})"
    );
    assert_eq!(
        receiver.delivered_ids(),
        ids,
        "from the unacknowledged batch on, in order"
    );
    let owner: String = redis::cmd("GET")
        .arg("rts:{t3}:sink-lease")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(owner, "sink-b");
    wait_for("acknowledged", LONG, || async {
        (pending(&redis, "t3").await == 0).then_some(())
    })
    .await;
    let _ = a.wait_exit(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_are_spread_over_the_live_sinks() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "side", &[]).await;
    let tables: Vec<String> = (0..6).map(|i| format!("spread{i}")).collect();
    for t in &tables {
        commit(&side, t, 1, |i| json!(i)).await;
    }
    let receiver = Receiver::ok().await;
    let _a = sink(&redis, "sink-a", &receiver, &[]).await;
    let _b = sink(&redis, "sink-b", &receiver, &[]).await;
    let mut conn = redis.conn().await;
    let counts = wait_for("three tables each", LONG, || {
        let tables = tables.clone();
        let mut conn = conn.clone();
        async move {
            let mut a = 0;
            let mut b = 0;
            for t in &tables {
                let owner: Option<String> = redis::cmd("GET")
                    .arg(format!("rts:{{{t}}}:sink-lease"))
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                match owner.as_deref() {
                    Some("sink-a") => a += 1,
                    Some("sink-b") => b += 1,
                    _ => {}
                }
            }
            (a == 3 && b == 3).then_some((a, b))
        }
    })
    .await;
    assert_eq!(counts, (3, 3));
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_batch_in_flight_then_exits() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "side", &[]).await;
    let ids = commit(&side, "t4", 5, |i| json!(i)).await;
    let receiver = Receiver::start(|_, _| (200, Duration::from_millis(1500))).await;
    let mut s = sink(&redis, "sink-a", &receiver, &[]).await;
    wait_for("the POST", LONG, || async {
        (receiver.arrived.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    s.signal("TERM");
    let status = s.wait_exit(Duration::from_secs(20)).await.expect("exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        receiver.delivered_ids(),
        ids,
        "the batch in flight was answered"
    );
    assert_eq!(
        pending(&redis, "t4").await,
        0,
        "and acknowledged before exiting"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_serves_health_readiness_and_its_metrics() {
    let redis = RedisServer::start().await;
    let receiver = Receiver::ok().await;
    let s = sink(&redis, "sink-a", &receiver, &[]).await;
    assert_eq!(s.get("/healthz").0, 200);
    assert_eq!(s.get("/readyz").0, 200);
    let (status, text) = s.get("/metrics");
    assert_eq!(status, 200);
    for name in rtsync::metrics::SINK_ALL {
        assert!(text.contains(name), "{name} exported from the start");
    }
    assert!(text.contains("rtsync_sink_deliveries_total{outcome=\"dead_lettered\"} 0"));
}

/// Commits one change and returns the stream's length after it.
async fn commit_and_len(side: &Sidecar, redis: &RedisServer, table: &str) -> usize {
    commit(side, table, 1, |i| json!(i)).await;
    support::stream_ids(&mut redis.conn().await, table)
        .await
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_never_trims_what_the_sink_has_not_acknowledged() {
    let redis = RedisServer::start().await;
    if redis.is_cluster() {
        return; // CONFIG SET below is per server; the cluster pass skips it
    }
    let mut conn = redis.conn().await;
    // One entry per stream node, so `MINID ~` trims exactly.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let side = Sidecar::start(&redis, "side", &[("RTS_RETENTION_SECS", "1")]).await;
    // The app is down: nothing is acknowledged.
    let receiver = Receiver::start(|_, _| (503, Duration::ZERO)).await;
    commit(&side, "kept", 3, |i| json!(i)).await;
    let _sink = sink(&redis, "sink-a", &receiver, &[("RTS_RETENTION_SECS", "1")]).await;
    wait_for("the sink's retention floor", LONG, || {
        let mut conn = conn.clone();
        async move {
            let floor: Option<u64> = redis::cmd("GET")
                .arg("rts:{kept}:sink-floor")
                .query_async(&mut conn)
                .await
                .ok()?;
            floor.map(|_| ())
        }
    })
    .await;
    let first_ms: u64 = support::stream_ids(&mut conn, "kept").await[0]
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    wait_for("the first entries to pass the retention", LONG, || async {
        (rtsync::clock::now_ms() > first_ms + 1_500).then_some(())
    })
    .await;
    assert_eq!(
        commit_and_len(&side, &redis, "kept").await,
        4,
        "unacknowledged entries are kept"
    );
    // Once the floor is gone (no sink for RTS_SINK_MAX_LAG_SECS), retention trims again.
    let _sink = _sink;
    drop(_sink);
    let _: () = redis::cmd("DEL")
        .arg("rts:{kept}:sink-floor")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        commit_and_len(&side, &redis, "kept").await,
        2,
        "without the floor, retention trims all but the last second"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_past_the_max_lag_are_trimmed_counted_and_logged_as_lost() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "side", &[]).await;
    // The app never takes anything; the sink keeps entries for 1 s at most.
    let receiver = Receiver::start(|_, _| (503, Duration::ZERO)).await;
    commit(&side, "late", 3, |i| json!(i)).await;
    let s = sink(
        &redis,
        "sink-a",
        &receiver,
        &[("RTS_SINK_MAX_LAG_SECS", "1")],
    )
    .await;
    let lost = wait_for("the entries counted lost", LONG, || async {
        let n = support::metric(&s.get("/metrics").1, "rtsync_sink_entries_lost_total");
        (n >= 3.0).then_some(n)
    })
    .await;
    assert_eq!(lost, 3.0, "each lost entry counted once");
    let mut conn = redis.conn().await;
    assert!(
        support::stream_ids(&mut conn, "late").await.is_empty(),
        "trimmed"
    );
    s.wait_for_log("lost to the sink").await;
}

#[test]
fn bad_sink_settings_are_refused_before_starting() {
    for (env, message) in [
        (vec![("RTS_SINK_URL", "ftp://app/hook")], "RTS_SINK_URL"),
        (vec![("RTS_SINK_URL", "not a url")], "RTS_SINK_URL"),
        (
            vec![
                ("RTS_SINK_URL", "http://app/hook"),
                ("RTS_SINK_SECRET", " "),
            ],
            "RTS_SINK_SECRET",
        ),
        (
            vec![("RTS_SINK_URL", "http://app/hook"), ("RTS_SINK_BATCH", "0")],
            "RTS_SINK_BATCH",
        ),
        (
            vec![
                ("RTS_SINK_URL", "http://app/hook"),
                ("RTS_SINK_TIMEOUT_MS", "0"),
            ],
            "RTS_SINK_TIMEOUT_MS",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rtsync"))
            .arg("sink")
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("run rtsync sink");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains(message), "{env:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bases_events_are_delivered_as_base_batches_in_order() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let ids: Vec<String> = (0..3)
        .map(|n| support::rename_base(&side, "b1", &format!("v{n}")))
        .collect();
    let receiver = Receiver::ok().await;
    let _sink = sink(&redis, "sink-a", &receiver, &[]).await;
    wait_for("the base's batch", LONG, || async {
        (receiver.delivered_ids().len() >= 3).then_some(())
    })
    .await;
    assert_eq!(receiver.delivered_ids(), ids);
    let batch = &receiver.received()[0].body;
    assert_eq!(batch["baseId"], "b1");
    assert!(batch.get("tableId").is_none(), "{batch}");
    assert_eq!(batch["events"][0]["entityType"], "base");
}
