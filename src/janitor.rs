//! Background upkeep shared by the fleet: every sidecar announces that it
//! is alive, and one at a time (behind a lock in Redis) sweeps stale
//! presence and removes the consumer groups of sidecars that are gone.
//! Every step is safe if two sidecars run it at once.
//!
//! A sidecar counts as gone once it has not announced itself for three
//! janitor ticks (15 s by default): its consumer groups are removed, and its connections leave
//! presence (their users get `user_left`) within about 20 s of a SIGKILL.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::presence::{self, SweepSettings};
use crate::store::{groups, presence as store_presence, Store};

/// How often the janitor runs, at most (more often with a short presence
/// TTL). A sidecar's announcement lasts three ticks: 15 s by default.
const TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs until `shutdown`.
pub async fn run(store: Arc<Store>, settings: SweepSettings, shutdown: CancellationToken) {
    let tick = settings.interval.min(TICK);
    let alive_ms = (3 * tick).as_millis() as u64;
    loop {
        if let Err(e) = groups::announce_instance(&store, alive_ms).await {
            tracing::debug!(error = %e, "cannot announce this sidecar yet");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let lock_ms = tick.as_millis() as u64;
        match store_presence::try_lock_sweeper(&store, lock_ms).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "janitor cannot take its lock");
                continue;
            }
        }
        let mut liveness = groups::Liveness::default();
        match presence::sweep(&store, settings, &mut liveness).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed stale presence"),
            Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
        }
        if let Err(e) = groups::remove_gone_groups(&store, &mut liveness).await {
            tracing::warn!(error = %e, "consumer group cleanup failed");
        }
    }
}
