//! The ordering of one subscription (docs/protocol.md 3.1), read frame by frame
//! in arrival order: the ack first, then `table_users`, then history
//! (`recent_changes`, or `missed_events` and `connection_recovered`), then
//! live events after the start, each once; under concurrent writes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtsync::protocol::StreamId;
use serde_json::{json, Value};
use support::client::{change, Client};
use support::{stream_ids, Cluster};

const LONG: Duration = Duration::from_secs(20);

/// Writes to `table` at about `per_second` until `stop`; returns the count.
async fn writer(
    side: &support::Sidecar,
    table: &'static str,
    per_second: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let mut w = Client::connect(side, "writer").await;
    tokio::spawn(async move {
        let pause = Duration::from_micros(1_000_000 / per_second);
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed) {
            w.request_ok(
                "record_change",
                change(table, &format!("r{}", n % 7), "f", json!(n)),
            )
            .await;
            n += 1;
            tokio::time::sleep(pause).await;
        }
        n
    })
}

/// Waits until `table`'s stream holds `n` more entries than now.
async fn grows_by(cluster: &Cluster, table: &str, n: usize) {
    let now = stream_ids(&mut cluster.redis.conn().await, table)
        .await
        .len();
    support::wait_for("more writes", LONG, || async {
        let len = stream_ids(&mut cluster.redis.conn().await, table)
            .await
            .len();
        (len >= now + n).then_some(())
    })
    .await;
}

/// The ids of `table`'s stream entries after `after`, oldest first.
async fn stream_after(cluster: &Cluster, table: &str, after: &str) -> Vec<StreamId> {
    let after = StreamId::parse(after).unwrap();
    stream_ids(&mut cluster.redis.conn().await, table)
        .await
        .iter()
        .map(|i| StreamId::parse(i).unwrap())
        .filter(|id| *id > after)
        .collect()
}

fn event_ids(event: &str, data: &Value) -> Vec<StreamId> {
    match event {
        "record_change" => vec![id_of(data)],
        _ => data
            .as_array()
            .map(|a| a.iter().map(id_of).collect())
            .unwrap_or_default(),
    }
}

fn id_of(e: &Value) -> StreamId {
    StreamId::parse(e["id"].as_str().expect("event id")).expect("a stream id")
}

/// Reads one subscription's frames in arrival order after sending its
/// request `rid`: checks 3.1 and returns (start, live ids) once `live`
/// live events arrived.
async fn check_subscription_order(
    c: &mut Client,
    rid: u64,
    history_frame: &str,
    live: usize,
) -> (StreamId, Vec<StreamId>) {
    let (event, ack, got_rid) = c.next(LONG).await.expect("a first frame");
    assert_eq!(
        (event.as_str(), got_rid),
        ("ack", Some(rid)),
        "the ack comes first: {ack}"
    );
    let start = StreamId::parse(ack["lastEventId"].as_str().expect("lastEventId")).unwrap();
    let (event, _, _) = c.next(LONG).await.expect("table_users");
    assert_eq!(event, "table_users");
    let mut seen = Vec::new();
    let mut in_history = true;
    while seen.iter().filter(|id| **id > start).count() < live {
        let (event, data, _) = c.next(LONG).await.expect("more frames");
        match event.as_str() {
            e if e == history_frame => {
                assert!(in_history, "history after a live event");
                for id in event_ids(e, &data) {
                    assert!(id <= start, "history at or before the start");
                    seen.push(id);
                }
            }
            "connection_recovered" => in_history = false,
            "record_change" | "batch_changes" => {
                in_history = false;
                for id in event_ids(&event, &data) {
                    assert!(id > start, "a live event after the start, never before");
                    seen.push(id);
                }
            }
            // Presence of the other subscribers may come at any time.
            "user_joined" | "user_left" | "user_reconnected" => {}
            other => panic!("unexpected {other}: {data}"),
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "every event once, in stream order");
    (start, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_live_event_reaches_a_fresh_subscriber_before_its_ack() {
    let cluster = Cluster::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = writer(&cluster.a, "busy", 200, stop.clone()).await;
    // Let the stream have some history first.
    support::wait_for("some writes", LONG, || async {
        (stream_ids(&mut cluster.redis.conn().await, "busy")
            .await
            .len()
            > 20)
            .then_some(())
    })
    .await;
    for n in 0..20 {
        let mut c = Client::connect(&cluster.b, &format!("s{n}")).await;
        let rid = c
            .send_request("subscribe_to_table", json!({"tableId": "busy"}))
            .await;
        check_subscription_order(&mut c, rid, "recent_changes", 5).await;
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writing.await.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_with_last_event_id_replays_exactly_what_was_missed_then_goes_live() {
    let cluster = Cluster::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = writer(&cluster.a, "t", 200, stop.clone()).await;
    support::wait_for("some writes", LONG, || async {
        (stream_ids(&mut cluster.redis.conn().await, "t").await.len() > 30).then_some(())
    })
    .await;
    let before = stream_ids(&mut cluster.redis.conn().await, "t").await;
    let last_seen = before[10].clone();
    let mut c = Client::connect(&cluster.b, "late").await;
    let rid = c
        .send_request(
            "subscribe_to_table",
            json!({"tableId": "t", "lastEventId": last_seen}),
        )
        .await;
    let (start, seen) = check_subscription_order(&mut c, rid, "missed_events", 10).await;
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    let expected: Vec<StreamId> = stream_after(&cluster, "t", &last_seen)
        .await
        .into_iter()
        .take(seen.len())
        .collect();
    assert_eq!(seen, expected, "exactly the stream after lastEventId");
    assert!(seen.iter().any(|id| *id <= start), "some were missed");
}

/// A user on `cluster.b` sees some of `t`'s events while `cluster.a`
/// writes, then drops, and writes go on while it is away: the last event id
/// it saw, and the writer (stopped through `stop`).
async fn seen_then_away(
    cluster: &Cluster,
    stop: Arc<AtomicBool>,
) -> (String, tokio::task::JoinHandle<usize>) {
    let writing = writer(&cluster.a, "t", 200, stop).await;
    let mut first = Client::subscribed(&cluster.b, "u", "t").await;
    let got = first.changes(15, LONG).await;
    let last_seen = got.last().expect("events")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    first.close().await;
    grows_by(cluster, "t", 20).await;
    (last_seen, writing)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_reconnect_order_racing_writes_loses_and_repeats_nothing() {
    let cluster = Cluster::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (last_seen, writing) = seen_then_away(&cluster, stop.clone()).await;
    // The seed's order: subscribe, then recover_connection.
    let mut c = Client::connect(&cluster.b, "u").await;
    let sub = c
        .request_ok("subscribe_to_table", json!({"tableId": "t"}))
        .await;
    let start = StreamId::parse(sub["lastEventId"].as_str().unwrap()).unwrap();
    let rec = c
        .request_ok(
            "recover_connection",
            json!({"tableId": "t", "lastEventId": last_seen}),
        )
        .await;
    assert_eq!(
        rec["lastEventId"], sub["lastEventId"],
        "the subscription's start"
    );
    // Let the writes go on a little, then stop and collect everything.
    grows_by(&cluster, "t", 30).await;
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    let after = StreamId::parse(&last_seen).unwrap();
    let want = stream_after(&cluster, "t", &last_seen).await;
    let mut missed = Vec::new();
    let mut live = Vec::new();
    let mut recovered = false;
    while missed.len() + live.len() < want.len() {
        let Some((event, data, _)) = c.next(LONG).await else {
            break;
        };
        match event.as_str() {
            "missed_events" => {
                assert!(!recovered);
                missed.extend(event_ids(&event, &data));
            }
            "connection_recovered" => {
                recovered = true;
                assert_eq!(
                    data["missedEventsCount"].as_u64(),
                    Some(missed.len() as u64)
                );
            }
            "record_change" | "batch_changes" => live.extend(event_ids(&event, &data)),
            _ => {}
        }
    }
    assert!(
        missed.iter().all(|id| *id > after && *id <= start),
        "missed = (lastEventId, start]"
    );
    assert!(live.iter().all(|id| *id > start), "live = after the start");
    let mut all: Vec<StreamId> = missed.iter().chain(&live).copied().collect();
    let unique: HashSet<StreamId> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "nothing twice");
    all.sort();
    assert_eq!(all, want, "nothing missing");
}

/// The seed's reconnect as it sends it: `subscribe_to_table` and
/// `recover_connection {lastEventId}` back to back, without waiting for the
/// first ack, while another user writes. Read in arrival order, every
/// change event (of any frame) comes in stream order, once, and together
/// they are exactly the stream after `lastEventId`: an app that applies
/// whatever arrives converges.
#[tokio::test(flavor = "multi_thread")]
async fn the_seed_reconnect_sent_back_to_back_arrives_in_stream_order_each_once() {
    let cluster = Cluster::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (last_seen, writing) = seen_then_away(&cluster, stop.clone()).await;
    let mut c = Client::connect(&cluster.b, "u").await;
    c.send("subscribe_to_table", json!({"tableId": "t"}), Some(1))
        .await;
    c.send(
        "recover_connection",
        json!({"tableId": "t", "lastEventId": last_seen}),
        Some(2),
    )
    .await;
    grows_by(&cluster, "t", 30).await;
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    let want = stream_after(&cluster, "t", &last_seen).await;
    let after = StreamId::parse(&last_seen).unwrap();
    let mut seen: Vec<StreamId> = Vec::new();
    while seen.iter().filter(|id| **id > after).count() < want.len() {
        let Some((event, data, _)) = c.next(LONG).await else {
            break;
        };
        if matches!(
            event.as_str(),
            "recent_changes" | "missed_events" | "record_change" | "batch_changes"
        ) {
            for id in event_ids(&event, &data) {
                if let Some(prev) = seen.last() {
                    assert!(
                        id > *prev,
                        "{event} brought {id} after {prev}: out of stream order or twice"
                    );
                }
                seen.push(id);
            }
        }
    }
    let got: Vec<StreamId> = seen.into_iter().filter(|id| *id > after).collect();
    assert_eq!(got, want, "exactly the stream after lastEventId");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscribes_steps_arrive_before_the_answer_to_the_next_request() {
    let cluster = Cluster::start().await;
    let side = &cluster.a;
    let mut w = Client::connect(side, "w").await;
    w.request_ok("record_change", change("t", "r1", "f", json!(1)))
        .await;
    let mut c = Client::connect(side, "c").await;
    // Both requests before reading anything: the second one's answer
    // must not overtake the steps that follow the first one's ack.
    c.send("subscribe_to_table", json!({"tableId": "t"}), Some(1))
        .await;
    c.send("heartbeat", json!({"tableId": "t"}), Some(2)).await;
    let mut order = Vec::new();
    while !order.contains(&"ack 2".to_owned()) {
        let (event, _, rid) = c.next(LONG).await.expect("a frame");
        order.push(match rid {
            Some(r) => format!("{event} {r}"),
            None => event,
        });
    }
    let at = |name: &str| order.iter().position(|e| e == name);
    assert!(at("ack 1") < at("table_users"), "{order:?}");
    assert!(at("table_users") < at("recent_changes"), "{order:?}");
    assert!(at("recent_changes") < at("ack 2"), "{order:?}");
}
