//! Connections never go silent and never hold more than their limits:
//! bounded history frames, writer failures that close the session,
//! pre-authentication limits, pings under the rate limit, and capped
//! subscriptions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::client::{change, Client};
use support::{RedisServer, Sidecar};
use tokio_tungstenite::tungstenite::Message;

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn recent_changes_of_large_edits_come_in_bounded_frames() {
    let redis = RedisServer::start().await;
    // Room for all 50 (3 MB) in the history bound, so only frames split.
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_PAGE_BYTES", "4194304")]).await;
    let mut w = Client::connect(&side, "w").await;
    let big = "x".repeat(60 * 1024);
    for n in 0..50 {
        w.request_ok(
            "record_change",
            change("t", &format!("r{n}"), "f", json!(big)),
        )
        .await;
    }
    let mut c = Client::connect(&side, "late").await;
    let rid = c
        .send_request("subscribe_to_table", json!({"tableId": "t"}))
        .await;
    let (event, _, got) = c.next(LONG).await.expect("the ack");
    assert_eq!((event.as_str(), got), ("ack", Some(rid)));
    assert_eq!(c.next(LONG).await.expect("table_users").0, "table_users");
    let mut frames = 0;
    let mut events = 0;
    while events < 50 {
        let (event, data, _) = c.next(LONG).await.expect("recent_changes");
        assert_eq!(event, "recent_changes");
        frames += 1;
        events += data.as_array().map(Vec::len).unwrap_or(0);
    }
    assert_eq!(events, 50);
    assert!(frames > 1, "split into bounded frames ({frames})");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_that_does_not_drain_is_closed_within_the_write_timeout() {
    let redis = RedisServer::start().await;
    // Queues big enough that only the write timeout can end it.
    let side = Sidecar::start(
        &redis,
        "a",
        &[
            ("RTS_WRITE_TIMEOUT_MS", "300"),
            ("RTS_SEND_QUEUE_BYTES", "1000000000"),
            ("RTS_SEND_QUEUE", "100000"),
        ],
    )
    .await;
    let _stalled = Client::subscribed(&side, "stalled", "t").await; // never reads again
    let mut w = Client::connect(&side, "w").await;
    let big = "y".repeat(500 * 1024);
    for n in 0..80 {
        w.request_ok(
            "record_change",
            change("t", "r", "f", json!(format!("{n}{big}"))),
        )
        .await;
    }
    support::wait_for("the stalled connection closed", LONG, || async {
        (side.total_connections() == 1).then_some(())
    })
    .await;
    let (_, text) = side.get("/metrics");
    assert!(
        support::metric(&text, "rtsync_writer_errors_total") >= 1.0,
        "{text}"
    );
    side.wait_for_log("the writer failed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_frame_before_authenticate_closes_4413() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::open(&side, None, &[], "").await;
    let padding = "p".repeat(17 * 1024);
    c.send("authenticate", json!({"token": padding}), Some(1))
        .await;
    assert_eq!(c.closed().await, Some(4413));
    // After authentication the normal frame limit applies.
    let mut ok = Client::connect(&side, "u").await;
    ok.request_ok("record_change", change("t", "r", "f", json!(padding)))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_unauthenticated_cap_closes_the_oldest_waiting_socket_4408() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_UNAUTHENTICATED", "2")]).await;
    // One after the other: a connection counts itself open and takes its
    // waiting place in one step, so `a` is surely the oldest waiting.
    let mut a = Client::open(&side, None, &[], "").await;
    support::wait_for("one open", LONG, || async {
        (side.total_connections() == 1).then_some(())
    })
    .await;
    let _b = Client::open(&side, None, &[], "").await;
    support::wait_for("two open", LONG, || async {
        (side.total_connections() == 2).then_some(())
    })
    .await;
    // A third is admitted; the oldest waiting one makes room.
    let mut c = Client::open(&side, None, &[], "").await;
    assert_eq!(a.closed().await, Some(4408));
    c.request_ok(
        "authenticate",
        json!({"token": support::tokens::token("u")}),
    )
    .await;
    // A token in the upgrade request never takes a waiting place.
    let token = support::tokens::token("v");
    let mut d = Client::open(
        &side,
        None,
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    )
    .await;
    d.expect_event("authenticated").await;
    let (_, text) = side.get("/metrics");
    assert!(text.contains("unauthenticated_evicted"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pings_count_against_the_rate_limit() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_RATE_LIMIT", "5")]).await;
    let mut c = Client::connect(&side, "pinger").await;
    for _ in 0..200 {
        if !c.try_send_raw(Message::Ping(vec![1].into())).await {
            break; // closed under the flood
        }
    }
    // The close frame may be lost to a reset: the server stops reading
    // with the flood's pings still unread.
    let code = c.closed().await;
    assert!(matches!(code, Some(4429) | Some(1006)), "{code:?}");
    side.wait_for_log("sustained rate-limit abuse").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_per_connection_are_capped() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_SUBSCRIPTIONS", "2")]).await;
    let mut c = Client::connect(&side, "u").await;
    for t in ["t1", "t2"] {
        c.request_ok("subscribe_to_table", json!({"tableId": t}))
            .await;
    }
    let err = c
        .request("subscribe_to_table", json!({"tableId": "t3"}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "bad_request");
    // Subscribing again to a table already held is not a new one.
    c.request_ok("subscribe_to_table", json!({"tableId": "t1"}))
        .await;
    c.request_ok("unsubscribe_from_table", json!({"tableId": "t2"}))
        .await;
    c.request_ok("subscribe_to_table", json!({"tableId": "t3"}))
        .await;
}

async fn exists(redis: &RedisServer, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap()
}

async fn registered(redis: &RedisServer, table: &str) -> bool {
    redis::cmd("SISMEMBER")
        .arg("rts:streams")
        .arg(table)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_nobody_wrote_leaves_no_stream_once_its_last_subscriber_leaves() {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "a", &[]).await;
    let b = Sidecar::start(&redis, "b", &[]).await;
    let mut on_a = Client::subscribed(&a, "u", "ghost").await;
    let mut on_b = Client::subscribed(&b, "v", "ghost").await;
    assert!(exists(&redis, "rts:{ghost}:events").await);
    assert!(registered(&redis, "ghost").await);
    on_a.request_ok("unsubscribe_from_table", json!({"tableId": "ghost"}))
        .await;
    // b still reads it: the stream and its registration stay.
    assert!(exists(&redis, "rts:{ghost}:events").await);
    assert!(registered(&redis, "ghost").await);
    on_b.request_ok("unsubscribe_from_table", json!({"tableId": "ghost"}))
        .await;
    support::wait_for("the empty stream deleted", LONG, || async {
        (!exists(&redis, "rts:{ghost}:events").await && !registered(&redis, "ghost").await)
            .then_some(())
    })
    .await;
    // A table with events keeps them, but leaves the registry.
    let mut w = Client::subscribed(&a, "w", "kept").await;
    w.request_ok("record_change", change("kept", "r", "f", json!(1)))
        .await;
    w.request_ok("unsubscribe_from_table", json!({"tableId": "kept"}))
        .await;
    support::wait_for("unregistered", LONG, || async {
        (!registered(&redis, "kept").await).then_some(())
    })
    .await;
    assert!(exists(&redis, "rts:{kept}:events").await);
    // Subscribing again works as before.
    let mut again = Client::subscribed(&b, "x", "ghost").await;
    let mut writer = Client::connect(&a, "y").await;
    writer
        .request_ok("record_change", change("ghost", "r", "f", json!(2)))
        .await;
    assert_eq!(again.changes(1, LONG).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clients_pings_are_answered_with_their_payloads_between_replies() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut c = Client::subscribed(&side, "u", "t").await;
    c.send_raw(Message::Ping(b"one".to_vec().into())).await;
    let rid = c
        .send_request("record_change", change("t", "r", "f", json!(1)))
        .await;
    c.send_raw(Message::Ping(b"two".to_vec().into())).await;
    assert_eq!(c.pongs(2).await, vec![b"one".to_vec(), b"two".to_vec()]);
    // The frames around the pings still arrive whole.
    assert!(c
        .take(|(e, _, r)| e == "ack" && *r == Some(rid))
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_sends_a_2mb_frame_reads_4413_every_time() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let frame = vec![0x92u8; 2 * 1024 * 1024];
    let mut codes = Vec::new();
    for _ in 0..50 {
        let mut c = Client::connect(&side, "u").await;
        // A browser or `ws` client that cannot finish its write reports
        // 1006 at once: the server must take the whole frame (and drop
        // it) for the close code to be read.
        if !c.try_send_raw(Message::Binary(frame.clone().into())).await {
            codes.push(Some(1006));
            continue;
        }
        codes.push(c.closed().await);
    }
    let wrong: Vec<_> = codes.iter().filter(|c| **c != Some(4413)).collect();
    assert!(
        wrong.is_empty(),
        "{} of 50 did not read 4413: {wrong:?}",
        wrong.len()
    );
}
