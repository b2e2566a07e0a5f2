//! A sidecar's lag on a table (`store::groups::own_lag`, the
//! `rtsync_consumer_group_lag_entries` gauge): its consumer group trails
//! the entries delivered from their doorbells until its next read, so the
//! lag is read against the last delivered entry, not the group alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer would.
#![allow(clippy::disallowed_methods)]

mod support;

use rtsync::change::StreamId;
use rtsync::store::groups;
use support::RedisServer;

const TABLE: &str = "lag";

/// A producer's entry on the table's stream; its id.
async fn append(redis: &RedisServer) -> StreamId {
    let id = support::producer_entry(redis, TABLE, "r").await;
    StreamId::parse(&id).expect("an id")
}

#[tokio::test]
async fn without_a_delivered_entry_the_lag_is_the_groups() {
    let redis = RedisServer::start().await;
    let store = support::store(&redis, "lag-test").await;
    groups::start_serving(&store, TABLE).await.expect("group");
    append(&redis).await;
    append(&redis).await;
    let lag = groups::own_lag(&store, TABLE, None).await.expect("lag");
    assert_eq!(lag, Some(2));
}

#[tokio::test]
async fn a_group_trailing_the_last_delivered_entry_with_nothing_after_it_has_no_lag() {
    let redis = RedisServer::start().await;
    let store = support::store(&redis, "lag-test").await;
    groups::start_serving(&store, TABLE).await.expect("group");
    append(&redis).await;
    let delivered = append(&redis).await;
    let lag = groups::own_lag(&store, TABLE, Some(delivered))
        .await
        .expect("lag");
    assert_eq!(lag, Some(0));
}

#[tokio::test]
async fn an_entry_after_the_last_delivered_one_shows_the_groups_lag_as_an_upper_bound() {
    let redis = RedisServer::start().await;
    let store = support::store(&redis, "lag-test").await;
    groups::start_serving(&store, TABLE).await.expect("group");
    append(&redis).await;
    let delivered = append(&redis).await;
    append(&redis).await;
    let lag = groups::own_lag(&store, TABLE, Some(delivered))
        .await
        .expect("lag");
    assert_eq!(lag, Some(3));
}

#[tokio::test]
async fn a_table_without_this_sidecars_group_has_no_lag_to_report() {
    let redis = RedisServer::start().await;
    let store = support::store(&redis, "lag-test").await;
    append(&redis).await;
    let lag = groups::own_lag(&store, TABLE, None).await.expect("lag");
    assert_eq!(lag, None);
}
