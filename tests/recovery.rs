//! Recovery and offline sync (docs/protocol.md section 3): nothing lost, nothing
//! twice, across reconnects, restarts and offline edits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::client::{change, Client};
use support::{ids, stream_ids};
use support::{Cluster, RedisServer, Sidecar};

const LONG: Duration = Duration::from_secs(30);

/// A request retried on `timeout`/`unavailable`, as a client does (after a
/// Redis restart a pooled connection may fail once).
async fn request_retrying(c: &mut Client, event: &str, data: Value) -> Value {
    loop {
        match c.request(event, data.clone()).await {
            Ok(ack) => return ack,
            Err(e) if e["code"] == "timeout" || e["code"] == "unavailable" => continue,
            Err(e) => panic!("{event} failed: {e}"),
        }
    }
}

async fn write_n(c: &mut Client, table: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        // After a Redis restart a pooled connection may fail once: retried
        // with the same clientChangeId, as a client would.
        let mut data = change(table, "r", "f", json!(i));
        data["clientChangeId"] = json!(format!(
            "{table}-{i}-{}",
            support::redis_server::rand_suffix()
        ));
        let ack = request_retrying(c, "record_change", data).await;
        out.push(ack["eventId"].as_str().unwrap().to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_sends_missed_events_then_connection_recovered_then_live_events() {
    let cluster = Cluster::start().await;
    let mut w = Client::connect(&cluster.a, "w").await;
    let written = write_n(&mut w, "t", 10).await;
    let mut c = Client::connect(&cluster.b, "r").await;
    let ack = c
        .request_ok(
            "recover_connection",
            json!({"tableId": "t", "lastEventId": written[2]}),
        )
        .await;
    assert_eq!(ack["missedEventsCount"], 7);
    assert_eq!(ack["lastEventId"], written[9].as_str());
    let missed = c.all_events(7, LONG).await;
    assert_eq!(ids(&missed), written[3..].to_vec());
    let done = c.expect_event("connection_recovered").await;
    assert_eq!(done["tableId"], "t");
    assert_eq!(done["missedEventsCount"], 7);
    assert_eq!(done["lastEventId"], written[9].as_str());
    assert!(done["timestamp"].as_u64().is_some());
    c.expect_event("table_users").await;
    let live = w
        .request_ok("record_change", change("t", "r", "f", json!("live")))
        .await;
    assert_eq!(
        ids(&c.all_events(1, LONG).await),
        vec![live["eventId"].as_str().unwrap()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_racing_live_events_yields_the_stream_exactly_once_in_order() {
    let cluster = Cluster::start().await;
    for round in 0..4 {
        let table = format!("race{round}");
        // Half the rounds, the table is already served on the recovering sidecar.
        let _other = if round % 2 == 0 {
            Some(Client::subscribed(&cluster.b, "o", &table).await)
        } else {
            None
        };
        let mut w = Client::connect(&cluster.a, "w").await;
        let before = write_n(&mut w, &table, 20).await;
        let writer = tokio::spawn(async move {
            write_n(&mut w, &table, 300).await;
        });
        let mut c = Client::connect(&cluster.b, "r").await;
        c.request_ok(
            "recover_connection",
            json!({"tableId": format!("race{round}"), "lastEventId": before[4]}),
        )
        .await;
        writer.await.unwrap();
        let expected: Vec<String> =
            stream_ids(&mut cluster.redis.conn().await, &format!("race{round}"))
                .await
                .into_iter()
                .skip(5)
                .collect();
        assert_eq!(expected.len(), 315);
        let got = c.all_events(expected.len(), LONG).await;
        assert_eq!(ids(&got), expected, "round {round}");
        assert!(
            c.all_events(1, Duration::from_millis(200)).await.is_empty(),
            "nothing twice"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trimmed_history_requires_a_resync() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut w = Client::connect(&side, "w").await;
    let written = write_n(&mut w, "t", 5).await;
    let mut conn = redis.conn().await;
    // What retention does to old entries.
    let _: i64 = redis::cmd("XTRIM")
        .arg("rts:{t}:events")
        .arg("MINID")
        .arg(&written[3])
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut c = Client::connect(&side, "r").await;
    let ack = c
        .request_ok(
            "recover_connection",
            json!({"tableId": "t", "lastEventId": written[1]}),
        )
        .await;
    assert_eq!(ack["resyncRequired"], "history_trimmed");
    let ev = c.expect_event("resync_required").await;
    assert_eq!(ev, json!({"tableId": "t", "reason": "history_trimmed"}));
    // From a position still held, recovery works.
    let ok = c
        .request_ok(
            "recover_connection",
            json!({"tableId": "t", "lastEventId": written[3]}),
        )
        .await;
    assert_eq!(ok["missedEventsCount"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_stream_requires_a_resync() {
    if support::cluster_mode() {
        return; // kills and restarts one Redis server: single-server only
    }
    let mut redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut w = Client::connect(&side, "w").await;
    let written = write_n(&mut w, "t", 3).await;
    // Redis restarts without persistence: the stream is gone.
    redis.restart().await;
    let mut c = Client::connect(&side, "r").await;
    let ack = request_retrying(
        &mut c,
        "recover_connection",
        json!({"tableId": "t", "lastEventId": written[2]}),
    )
    .await;
    assert_eq!(ack["resyncRequired"], "stream_reset");
    c.expect_event("resync_required").await;
    // The stream began again: an id from the old one is still a reset.
    let mut w2 = Client::connect(&side, "w2").await;
    write_n(&mut w2, "t", 2).await;
    let ack = c
        .request_ok(
            "recover_connection",
            json!({"tableId": "t", "lastEventId": written[0]}),
        )
        .await;
    assert_eq!(ack["resyncRequired"], "stream_reset");
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_refuses_bad_ids() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::subscribed(&side, "r", "t").await;
    let err = c
        .request(
            "recover_connection",
            json!({"tableId": "u", "lastEventId": "yesterday"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err["code"], "bad_request");
}

fn offline(
    record: &str,
    cc: &str,
    kind: &str,
    version: Option<u64>,
    field: &str,
    value: Value,
) -> Value {
    let mut c = json!({"type": kind, "entityId": record, "tableId": "t", "baseId": "b",
        "changes": [{"fieldId": field, "newValue": value}], "clientChangeId": cc, "timestamp": 1});
    if let Some(v) = version {
        c["version"] = json!(v);
    }
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_batch_reports_applied_merged_rejected_and_duplicates_and_resending_writes_nothing()
{
    let cluster = Cluster::start().await;
    let mut online = Client::connect(&cluster.a, "online").await;
    // r1 at version 2 (f1 changed at 2); r2 exists.
    online
        .request_ok("record_change", change("t", "r1", "f1", json!(1)))
        .await;
    online
        .request_ok("record_change", change("t", "r1", "f1", json!(2)))
        .await;
    online
        .request_ok(
            "record_change",
            json!({"type": "create", "recordId": "r2", "tableId": "t",
        "changes": [{"fieldId": "f", "newValue": 0}]}),
        )
        .await;
    let mut watcher = Client::subscribed(&cluster.b, "watcher", "t").await;
    let mut c = Client::connect(&cluster.b, "offline-user").await;
    let batch = json!([
        offline("r3", "cc-1", "create", None, "f", json!("new")), // applied
        offline("r1", "cc-2", "update", Some(1), "f2", json!("x")), // merged: f2 untouched since 1
        offline("r2", "cc-3", "create", None, "f", json!("dup-create")), // rejected: exists
        offline("r3", "cc-1", "create", None, "f", json!("new")), // duplicate of the first
    ]);
    let mut ack = c.request_ok("sync_offline_changes", batch.clone()).await;
    // Every change's own CommitResult, in order, for the client's outbox.
    let results = ack["results"].take();
    let statuses: Vec<&str> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "merged", "rejected", "duplicate"]);
    assert_eq!(results[1]["clientChangeId"], "cc-2");
    assert_eq!(results[3]["originalStatus"], "applied");
    assert_eq!(results[3]["eventId"], results[0]["eventId"]);
    let ack = json!({"applied": ack["applied"], "merged": ack["merged"],
        "rejected": ack["rejected"], "duplicates": ack["duplicates"]});
    assert_eq!(
        ack,
        json!({"applied": 1, "merged": 1, "rejected": 1, "duplicates": 1})
    );
    let changes = c.expect_event("offline_changes").await;
    let events = changes["events"].as_array().unwrap();
    assert_eq!(
        events.len(),
        3,
        "applied, merged and the duplicate's original event"
    );
    assert_eq!(events[0]["entityId"], "r3");
    assert_eq!(events[0]["userId"], "offline-user");
    assert_eq!(changes["rejected"][0]["status"], "rejected");
    assert_eq!(changes["rejected"][0]["clientChangeId"], "cc-3");
    assert_eq!(changes["rejected"][0]["current"]["fields"]["f"], 0);
    let complete = c.expect_event("offline_sync_complete").await;
    assert_eq!(complete, ack);
    // Other subscribers see the two writes live.
    assert_eq!(watcher.changes(2, LONG).await.len(), 2);
    let len_before = stream_ids(&mut cluster.redis.conn().await, "t").await.len();
    // The answer was "lost": the same batch again writes nothing.
    let mut again = c.request_ok("sync_offline_changes", batch).await;
    again.as_object_mut().unwrap().remove("results");
    assert_eq!(
        again,
        json!({"applied": 0, "merged": 0, "rejected": 0, "duplicates": 4})
    );
    // The rejection is remembered: its resend is reported as rejected again.
    let changes = c.expect_event("offline_changes").await;
    assert_eq!(changes["rejected"][0]["clientChangeId"], "cc-3");
    assert_eq!(changes["rejected"][0]["originalStatus"], "rejected");
    assert_eq!(
        stream_ids(&mut cluster.redis.conn().await, "t").await.len(),
        len_before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_batches_are_bounded_and_validated_first() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_BATCH", "2")]).await;
    let mut c = Client::connect(&side, "u").await;
    let three: Vec<Value> = (0..3)
        .map(|i| offline("r", &format!("c{i}"), "update", None, "f", json!(i)))
        .collect();
    let err = c
        .request("sync_offline_changes", json!(three))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "payload_too_large");
    let bad = json!([offline("r", "c1", "update", None, "f", json!(1)), {"type": "update", "entityId": "r"}]);
    let err = c.request("sync_offline_changes", bad).await.unwrap_err();
    assert_eq!(err["code"], "bad_request");
    assert!(err["message"].as_str().unwrap().starts_with("changes[1]"));
    assert!(
        stream_ids(&mut redis.conn().await, "t").await.is_empty(),
        "nothing of a bad batch is written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_of_a_killed_sidecar_recovers_on_another_without_loss_or_repeats() {
    let mut cluster = Cluster::start().await;
    let mut c = Client::subscribed(&cluster.a, "reader", "t").await;
    let mut w = Client::connect(&cluster.b, "writer").await;
    let writer = tokio::spawn(async move { write_n(&mut w, "t", 400).await });
    let mut seen = c.changes(50, LONG).await;
    cluster.a.signal("KILL");
    assert!(cluster.a.wait_exit(Duration::from_secs(5)).await.is_some());
    // Whatever was already on the wire.
    seen.extend(c.changes(usize::MAX, Duration::from_millis(300)).await);
    let last = seen.last().unwrap()["id"].as_str().unwrap().to_owned();
    let mut again = Client::connect(&cluster.b, "reader").await;
    again
        .request_ok(
            "recover_connection",
            json!({"tableId": "t", "lastEventId": last}),
        )
        .await;
    let written = writer.await.unwrap();
    let rest = again.all_events(written.len() - seen.len(), LONG).await;
    seen.extend(rest);
    assert_eq!(ids(&seen), written, "every event once, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_sidecar_reuses_its_consumer_group() {
    let redis = RedisServer::start().await;
    let mut first = Sidecar::start(&redis, "same-id", &[]).await;
    let _c = Client::subscribed(&first, "u", "t").await;
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(5)).await;
    let second = Sidecar::start(&redis, "same-id", &[]).await;
    let mut c = Client::subscribed(&second, "u", "t").await;
    let mut w = Client::connect(&second, "w").await;
    let ack = w
        .request_ok("record_change", change("t", "r", "f", json!(1)))
        .await;
    assert_eq!(c.changes(1, LONG).await[0]["id"], ack["eventId"]);
    let mut conn = redis.conn().await;
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("rts:{t}:events")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(groups.len(), 1, "one group per instance id");
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_of_gone_sidecars_are_removed() {
    let redis = RedisServer::start().await;
    let env = [("RTS_PRESENCE_TTL_SECS", "2")];
    let mut gone = Sidecar::start(&redis, "gone", &env).await;
    let stays = Sidecar::start(&redis, "stays", &env).await;
    let _a = Client::subscribed(&gone, "u", "t").await;
    let _b = Client::subscribed(&stays, "v", "t").await;
    gone.signal("KILL");
    gone.wait_exit(Duration::from_secs(5)).await;
    let mut conn = redis.conn().await;
    support::wait_for(
        "the gone sidecar's group removed",
        Duration::from_secs(15),
        || {
            let mut conn = conn.clone();
            async move {
                let groups: redis::Value = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg("rts:{t}:events")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                let text = format!("{groups:?}");
                (!text.contains("\"gone\"") && !text.contains("gone")).then_some(())
            }
        },
    )
    .await;
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("rts:{t}:events")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(format!("{groups:?}").contains("stays"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_over_ten_thousand_events_asks_for_a_reload_and_stays_subscribed() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    // 10,001 events appended by a producer, in one script.
    let _: i64 = redis::cmd("EVAL")
        .arg(
            "for i = 1, 10001 do redis.call('XADD', KEYS[1], '*', 'type', 'update', \
             'entityType', 'record', 'entityId', 'r', 'userId', 'p', 'version', i) end return 1",
        )
        .arg(1)
        .arg("rts:{long}:events")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let mut c = Client::connect(&side, "r").await;
    let ack = c
        .request_ok(
            "recover_connection",
            json!({"tableId": "long", "lastEventId": "0-0"}),
        )
        .await;
    assert_eq!(ack["resyncRequired"], "history_too_long");
    let resync = c.expect_event("resync_required").await;
    assert_eq!(resync["reason"], "history_too_long");
    assert!(
        c.inbox.iter().all(|(e, _, _)| e != "missed_events"),
        "nothing replayed"
    );
    // Still subscribed: later events arrive live.
    let mut w = Client::connect(&side, "w").await;
    w.request_ok("record_change", change("long", "r", "f", json!(1)))
        .await;
    assert_eq!(c.changes(1, LONG).await.len(), 1);
}
