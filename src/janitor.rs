//! Background upkeep shared by the fleet: every sidecar announces that it
//! is alive, and one at a time (behind a lock in Redis) sweeps stale
//! presence and removes the consumer groups of sidecars that are gone.
//! Every step is safe if two sidecars run it at once.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::presence::{self, SweepSettings};
use crate::store::{groups, presence as store_presence, Store};

/// Runs until `shutdown`.
pub async fn run(store: Arc<Store>, settings: SweepSettings, shutdown: CancellationToken) {
    // A sidecar silent for the presence TTL counts as gone, like its users.
    let alive_ms = settings
        .ttl
        .as_millis()
        .max(3 * settings.interval.as_millis()) as u64;
    loop {
        if let Err(e) = groups::announce_instance(&store, alive_ms).await {
            tracing::debug!(error = %e, "cannot announce this sidecar yet");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        let lock_ms = settings.interval.as_millis() as u64;
        match store_presence::try_lock_sweeper(&store, lock_ms).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "janitor cannot take its lock");
                continue;
            }
        }
        match presence::sweep(&store, settings).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed stale presence"),
            Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
        }
        if let Err(e) = groups::remove_gone_groups(&store).await {
            tracing::warn!(error = %e, "consumer group cleanup failed");
        }
    }
}
