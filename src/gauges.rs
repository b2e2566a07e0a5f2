//! Periodic upkeep of the metrics recorder, and gauges that need Redis: whether Redis answers (with a log line
//! when that changes), the largest consumer-group lag of the tables this
//! sidecar reads, and how many users are present on them. Sampled every few
//! seconds, over at most [`MAX_SAMPLED_TABLES`] tables.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::store::{Store, StoreError};

const INTERVAL: Duration = Duration::from_secs(5);
/// Keeps one sample cheap on a sidecar serving thousands of tables.
pub const MAX_SAMPLED_TABLES: usize = 500;

pub async fn run(
    store: Arc<Store>,
    hub: Arc<Hub>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: CancellationToken,
) {
    let mut was_up: Option<bool> = None;
    loop {
        // Folds histogram samples into their buckets; without it they pile
        // up between scrapes.
        metrics.run_upkeep();
        let up = store.ping().await;
        crate::metrics::redis_up(up);
        if was_up != Some(up) {
            if up {
                tracing::info!("redis available");
            } else {
                tracing::warn!("redis unavailable: requests answer `unavailable` until it is back");
            }
            was_up = Some(up);
        }
        if up {
            if let Err(e) = sample(&store, &hub).await {
                tracing::debug!(error = %e, "gauge sample failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

async fn sample(store: &Store, hub: &Hub) -> Result<(), StoreError> {
    let mut max_lag = 0u64;
    let mut users = 0u64;
    for table in hub.table_ids().into_iter().take(MAX_SAMPLED_TABLES) {
        if let Some(lag) = crate::store::groups::own_lag(store, &table, hub.cursor(&table)).await? {
            max_lag = max_lag.max(lag);
        }
        users += crate::store::presence::count(store, &table).await?;
    }
    crate::metrics::consumer_group_lag(max_lag);
    crate::metrics::presence_users(users);
    Ok(())
}
