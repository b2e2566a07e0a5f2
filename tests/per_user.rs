//! Bounds per user and sidecar, over all of a user's connections: tables
//! subscribed (`RTS_MAX_SUBSCRIPTIONS_PER_USER`) and the cursor/selection
//! relay rate (20 per second per table), not only per socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Client, RedisServer, Sidecar};

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_are_capped_per_user_over_all_their_connections() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_SUBSCRIPTIONS_PER_USER", "3")]).await;
    let mut one = Client::connect(&side, "u").await;
    let mut two = Client::connect(&side, "u").await;
    for t in ["t1", "t2"] {
        one.request_ok("subscribe_to_table", json!({"tableId": t}))
            .await;
    }
    two.request_ok("subscribe_to_table", json!({"tableId": "t3"}))
        .await;
    let err = two
        .request("subscribe_to_table", json!({"tableId": "t4"}))
        .await
        .unwrap_err();
    assert_eq!(err["code"], "bad_request");
    assert!(err["message"]
        .as_str()
        .unwrap_or("")
        .contains("RTS_MAX_SUBSCRIPTIONS_PER_USER"));
    // Another user is not affected.
    let mut other = Client::connect(&side, "v").await;
    other
        .request_ok("subscribe_to_table", json!({"tableId": "t4"}))
        .await;
    // A place comes back with an unsubscribe, and with a closed connection.
    one.request_ok("unsubscribe_from_table", json!({"tableId": "t1"}))
        .await;
    two.request_ok("subscribe_to_table", json!({"tableId": "t4"}))
        .await;
    one.close().await;
    support::wait_for(
        "the closed connection's places back",
        Duration::from_secs(10),
        || {
            let side = &side;
            async move {
                let mut c = Client::connect(side, "u").await;
                c.request("subscribe_to_table", json!({"tableId": "t5"}))
                    .await
                    .is_ok()
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_sockets_of_one_user_relay_cursors_at_one_users_rate() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut victim = Client::subscribed(&side, "victim", "t").await;
    let mut sockets = Vec::new();
    for _ in 0..8 {
        sockets.push(Client::subscribed(&side, "spam", "t").await);
    }
    let began = Instant::now();
    let mut sent = 0;
    while began.elapsed() < Duration::from_secs(2) {
        for (n, s) in sockets.iter_mut().enumerate() {
            let cursor = json!({"recordId": format!("r{sent}"), "fieldId": format!("f{n}")});
            s.send(
                "cursor_position",
                json!({"tableId": "t", "cursor": cursor}),
                None,
            )
            .await;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let window = began.elapsed();
    let mut relayed = 0;
    while victim
        .take_within(Duration::from_millis(300), |(e, d, _)| {
            e == "cursor_position" && d["userId"] == "spam"
        })
        .await
        .is_some()
    {
        relayed += 1;
    }
    let per_second = f64::from(relayed) / window.as_secs_f64();
    eprintln!("{sent} cursor moves from 8 sockets; the victim got {relayed} ({per_second:.1}/s)");
    assert!(relayed > 5, "cursors still flow ({relayed})");
    assert!(
        per_second <= 26.0,
        "{per_second:.1} cursor frames/s from one user"
    );
    let (_, text) = side.get("/metrics");
    assert!(support::metric(&text, "rtsync_presence_relays_deferred_total") > 0.0);
}
