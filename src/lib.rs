//! # rtsync
//!
//! A sidecar that gives a spreadsheet-style app real-time collaboration over
//! Redis Streams. Browsers hold one WebSocket to it; every sidecar shares one
//! Redis; Redis Functions do the atomic version checks.
//!
//! # Layout
//!
//! - [`config`]: every setting, its flag, environment variable and default.
//! - [`change`]: a change as it arrives, validated, and as it leaves a
//!   stream; the rules it obeys. A leaf.
//! - [`protocol`]: wire frames, payloads, event encoding and error codes.
//! - [`auth`]: JWT verification and table grants.
//! - [`session`]: one WebSocket connection: read loop, dispatch, outbox.
//! - [`hub`]: table → local subscribers (pending until their history is
//!   queued), and the fan-out of events. Needs no Redis.
//! - [`store`]: Redis: connections, `rtsync_commit`, record states
//!   (`load_records`, seed), groups, a table's start and stop, the tailer
//!   and the presence bus, which call up only through
//!   [`store::events::EventHandler`] (the hub implements it).
//! - [`transport`]: what a connection is read from and written to (a
//!   WebSocket's halves, or a long-polling link's channels).
//! - [`http`]: the one port: routes, REST API, WebSocket upgrade.
//! - [`socketio`]: Engine.IO/Socket.IO packets, and the session's framing
//!   over them for `/socket.io/`.
//! - [`delta`]: `calculate_delta` for producers that hold whole records.
//! - [`filter`]: the filter language of views and row grants: parse,
//!   evaluate on a record, index keys for cohorts. A leaf.
//! - [`cohort`]: filtered subscribers grouped into cohorts, indexed by
//!   value; each record event's before/after states and the enter/leave
//!   decision of the live fan-out (used by the hub).
//! - [`view`]: each table's view filters as this sidecar knows them, kept
//!   in stream order from `view` events (wrapping the tailer's handler and
//!   the tables' start and stop) or read from their keys on first use.
//! - [`presence`]: presence rules: cursor coalescing, sweep settings.
//! - [`janitor`]: fleet upkeep: stale presence, groups of gone sidecars.
//! - [`audit`]: the hash-chained audit log of sensitive operations, its
//!   writer task, its reads and its verification.
//! - [`metrics`]: every metric name; [`gauges`]: gauges sampled from Redis.
//! - [`backoff`]: the capped exponential backoff of every retry loop.
//!
//! The path of one edit: session → `FCALL rtsync_commit` (store::commit) →
//! `ack`; the tailer of every sidecar reads the stream entry → hub → each
//! subscriber's outbox → socket. A subscription's entry path (ack, then
//! history, then live events) is `session::tables` (its `join`).

pub mod app;
pub mod audit;
pub mod auth;
pub mod backoff;
pub mod change;
pub mod clock;
pub mod cohort;
pub mod compression;
pub mod config;
pub mod delta;
pub mod filter;
pub mod gauges;
pub mod grant;
pub mod http;
pub mod hub;
pub mod janitor;
pub mod locks;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod protocol;
pub mod session;
pub mod sink;
pub mod socketio;
pub mod store;
pub mod transport;
pub mod upgrade;
pub mod view;
pub mod waiting;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::auth::Authenticator;
use crate::backoff::Backoff;
use crate::config::{AuthMode, Config};
use crate::hub::Hub;
use crate::store::presence_bus::PresenceBus;
use crate::store::serving::Serving;
use crate::store::tailer::TailerHandle;
use crate::store::Store;

/// How long shutdown waits for connections and tasks to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

pub use clock::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Auth(#[from] auth::AuthConfigError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Durability(#[from] store::durable::DurabilityError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs a sidecar until `shutdown` is cancelled, then drains: stops
/// accepting, closes WebSockets with 4500, waits for tasks (bounded).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    config.validate()?;
    let mut config = config;
    for warning in config.clamp() {
        tracing::warn!("{warning}");
    }
    let config = Arc::new(config);
    if config.auth == AuthMode::None {
        tracing::warn!("RTS_AUTH=none: development authentication, every user may do anything");
    }
    let metrics = metrics::install();
    let metrics_upkeep = metrics.clone();
    let auth = Authenticator::from_config(&config)?;
    let instance_id = config.instance_id();
    let (listener, addr) = config.bind().await.map_err(|source| RunError::Listen {
        addr: config.listen,
        source,
    })?;
    let store = Arc::new(Store::from_config(&config, config.redis_pool.get(), &shutdown).await?);
    check_durability(&store, &config, &shutdown).await?;
    let tasks = TaskTracker::new();
    // Stopped after the connections are gone, so what they record on
    // their way out is still written.
    let (audit, audit_stop) = audit::start(&store, &config, &tasks);
    if let Some(sentinels) = store::sentinel::Sentinels::from_config(&config) {
        tasks.spawn(store::sentinel::follow(
            store.clone(),
            sentinels,
            shutdown.clone(),
        ));
    }
    let tailer = TailerHandle::new(store.clone(), config.tailer_readers.get());
    let bus = PresenceBus::new(store.clone(), tailer.clone())?;
    let serving = Arc::new(Serving::new(store.clone(), tailer.clone(), bus.clone()));
    // v1.3 views follow each table's start and stop and its `view` events.
    let views = Arc::new(view::Views::new());
    let serving = Arc::new(view::follow::ViewServing::new(serving, views.clone()));
    let hub = Arc::new(Hub::new(serving));
    let app = Arc::new(App::new(
        config.clone(),
        store.clone(),
        hub.clone(),
        auth,
        metrics,
        shutdown.clone(),
        tasks.clone(),
        audit,
        views.clone(),
    ));
    tasks.spawn(load_library(
        store.clone(),
        app.library_loaded.clone(),
        shutdown.clone(),
    ));
    let tailed = Arc::new(view::follow::ViewEvents::new(hub.clone(), views));
    tailer.spawn(tailed, &tasks, shutdown.clone());
    tasks.spawn(gauges::run(
        store.clone(),
        hub.clone(),
        metrics_upkeep,
        shutdown.clone(),
    ));
    bus.spawn(hub, &tasks, shutdown.clone());
    tasks.spawn(janitor::run(
        store.clone(),
        presence::SweepSettings::from_config(&config),
        shutdown.clone(),
    ));
    tracing::info!(%addr, instance_id, "listening");

    http::serve(app, listener).await;
    audit_stop.cancel();
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(remaining = tasks.len(), "drain timed out; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Checks once that Redis can give `RTS_DURABLE_WRITES` (docs/protocol.md
/// 11), waiting while it is unreachable: a server that cannot (`aof` before
/// Redis 7.2) stops the start with an error naming its version.
async fn check_durability(
    store: &Store,
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<(), store::durable::DurabilityError> {
    use store::durable::{check_server, DurabilityError, Durable};
    let durable = Durable::from_config(config);
    let mut backoff = Backoff::reconnect();
    loop {
        match check_server(store, durable).await {
            Err(DurabilityError::Unreadable(e)) => {
                tracing::warn!(error = %e, "cannot check Redis for RTS_DURABLE_WRITES yet");
            }
            other => return other,
        }
        if !backoff.wait(shutdown).await {
            return Ok(());
        }
    }
}

/// Loads the function library, retrying while Redis is unreachable; the
/// sidecar is ready only once it is loaded.
async fn load_library(
    store: Arc<Store>,
    loaded: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::reconnect();
    loop {
        match store.load_library().await {
            Ok(()) => {
                tracing::info!("function library rtsync loaded");
                loaded.store(true, std::sync::atomic::Ordering::Release);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot load the function library yet"),
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}
