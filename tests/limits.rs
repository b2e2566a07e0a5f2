//! Hostile input and faults: rate limits, connection limits, slow
//! consumers and Redis outages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::client::{change, Client};
use support::{RedisServer, Sidecar};

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn excess_messages_get_rate_limited_and_sustained_abuse_closes_4429() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_RATE_LIMIT", "5")]).await;
    let mut abuser = Client::subscribed(&side, "abuser", "t").await;
    let mut neighbour = Client::subscribed(&side, "neighbour", "t").await;
    for _ in 0..12 {
        abuser
            .send("heartbeat", json!({"tableId": "t"}), None)
            .await;
    }
    let (_, err, _) = abuser
        .take(|(e, d, _)| e == "error" && d["code"] == "rate_limited")
        .await
        .expect("rate_limited");
    assert_eq!(err["code"], "rate_limited");
    for _ in 0..40 {
        abuser
            .send("heartbeat", json!({"tableId": "t"}), None)
            .await;
    }
    assert_eq!(abuser.closed().await, Some(4429));
    // Other connections are unaffected.
    neighbour
        .request_ok("heartbeat", json!({"tableId": "t"}))
        .await;
    let (_, metrics) = side.get("/metrics");
    assert!(support::metric(&metrics, "rtsync_rate_limited_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_per_user_are_limited() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_CONNECTIONS_PER_USER", "2")]).await;
    let _one = Client::connect(&side, "u").await;
    let _two = Client::connect(&side, "u").await;
    let mut three = Client::open(&side, None, &[], "").await;
    let err = three
        .request(
            "authenticate",
            json!({"token": support::tokens::token("u")}),
        )
        .await
        .unwrap_err();
    assert_eq!(err["code"], "rate_limited");
    assert_eq!(three.closed().await, Some(4429));
    let _other_user = Client::connect(&side, "v").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_per_sidecar_are_limited() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_MAX_CONNECTIONS", "1")]).await;
    let _one = Client::connect(&side, "u").await;
    let refused = tokio_tungstenite::connect_async(side.ws_url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected HTTP 503, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_consumer_is_dropped_while_others_keep_up() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_SEND_QUEUE", "64")]).await;
    let mut stalled = Client::subscribed(&side, "stalled", "t").await; // never reads below
    let mut reader = Client::subscribed(&side, "reader", "t").await;
    const N: usize = 600;
    // The reader keeps reading while the writer floods.
    let reading = tokio::spawn(async move { reader.changes(N, LONG).await });
    let mut writer = Client::connect(&side, "w").await;
    let big = "x".repeat(60_000);
    let mut written = Vec::new();
    for n in 0..N {
        let ack = writer
            .request_ok(
                "record_change",
                change("t", "r", "f", json!(format!("{n}{big}"))),
            )
            .await;
        written.push(ack["eventId"].clone());
    }
    let got = reading.await.unwrap();
    let got: Vec<Value> = got.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(got, written, "the reading subscriber got everything");
    support::wait_for("slow consumer dropped", Duration::from_secs(10), || async {
        let (_, m) = side.get("/metrics");
        (support::metric(&m, "rtsync_slow_consumer_disconnects_total") >= 1.0).then_some(())
    })
    .await;
    let code = stalled.closed().await;
    assert!(matches!(code, Some(4503) | Some(1006)), "closed: {code:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_under_traffic_loses_and_repeats_nothing() {
    if support::cluster_mode() {
        return; // kills and restarts one Redis server: single-server only
    }
    let mut redis = RedisServer::start_with(true).await;
    let a = Sidecar::start(&redis, "a", &[]).await;
    let b = Sidecar::start(&redis, "b", &[]).await;
    let mut sub = Client::subscribed(&b, "sub", "t").await;
    let mut writer = Client::connect(&a, "w").await;
    let mut acked: Vec<String> = Vec::new();
    let mut unavailable = 0;
    for n in 0..120 {
        if n == 40 {
            redis.kill();
        }
        if n == 60 {
            redis.restart().await;
        }
        let mut data = change("t", "r", "f", json!(n));
        data["clientChangeId"] = json!(format!("c{n}"));
        loop {
            match writer.request("record_change", data.clone()).await {
                Ok(ack) => {
                    acked.push(ack["eventId"].as_str().unwrap().to_owned());
                    break;
                }
                Err(e) => {
                    // Not sent (`unavailable`), or sent without an answer
                    // (`timeout`): both are resent with the same id.
                    assert!(e["code"] == "unavailable" || e["code"] == "timeout", "{e}");
                    unavailable += 1;
                    if n < 60 {
                        break; // retried after the restart below
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    assert!(unavailable > 0, "the outage was seen");
    let mut dedup = acked.clone();
    dedup.dedup();
    assert_eq!(dedup, acked);
    // The subscriber receives the stream once, in order: every acknowledged
    // event, plus any change Redis applied just before it was killed
    // (answered `timeout` because the reply was lost).
    let stream = support::stream_ids(&mut redis.conn().await, "t").await;
    let got = support::ids(&sub.changes(stream.len(), LONG).await);
    assert_eq!(got, stream);
    assert!(
        acked.iter().all(|id| got.contains(id)),
        "every acknowledged event delivered"
    );
    assert!(sub.changes(1, Duration::from_millis(300)).await.is_empty());
    // Ready again: a connection idle through the outage reconnects on its
    // first command after it, so the first probe may still see it fail.
    support::wait_for("ready after the outage", LONG, || async {
        (a.get("/readyz").0 == 200).then_some(())
    })
    .await;
}
