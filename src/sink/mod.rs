//! `rtsync sink`: every table's change events, delivered to the app's HTTP
//! endpoint (docs/protocol.md section 9).
//!
//! Data flow: every `DISCOVERY_EVERY` the coordinator ([`run`]) announces
//! this process in `<p>:sinks`, finds every table stream ([`discovery`]),
//! makes sure each has the `rtsync-sink` consumer group (created at the
//! stream's start, so every entry still held is delivered), renews the
//! leases it holds and takes free ones while it owns fewer than its fair
//! share (tables / live sinks), giving extra ones up. Each owned table runs
//! a [`worker`], which reads, POSTs ([`deliver`]) and acknowledges batches in
//! stream order. A sink that dies stops renewing; its leases expire after
//! `LEASE_TTL` and the others take its tables and its unacknowledged entries.
//! On shutdown the workers finish the POST in flight, the leases are given
//! up, and the process exits. With `RTS_SINK_AUDIT=true` the audit stream
//! is one more leased stream, delivered by [`audit`].

pub mod audit;
pub mod deliver;
pub mod worker;

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::config::{Config, SinkConfig};
use crate::store::discovery::Discovery;
use crate::store::sink_group;
use crate::store::{Store, StoreError};
use worker::Shared;

/// How often tables are discovered and leases renewed.
const DISCOVERY_EVERY: Duration = Duration::from_secs(1);
/// A lease lasts this long unless renewed: a dead sink's tables move after it.
const LEASE_TTL: Duration = Duration::from_secs(5);
/// A sink not seen for this long no longer counts for the fair share.
const SINK_ALIVE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

struct Owned {
    stop: CancellationToken,
    lag_ms: Arc<AtomicU64>,
}

/// Runs the sink until `shutdown`, then drains.
pub async fn run(
    config: Config,
    sink: SinkConfig,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    config.validate()?;
    let metrics = crate::metrics::install();
    crate::metrics::register_sink();
    let instance_id = config.instance_id();
    let (listener, addr) = config.bind().await.map_err(|source| SinkError::Listen {
        addr: config.listen,
        source,
    })?;
    let store = Arc::new(Store::from_config(&config, 2, &shutdown).await?);
    let poster = deliver::Poster::new(sink.url.clone(), sink.secret.clone(), sink.timeout)?;
    let shared = Arc::new(Shared {
        store: store.clone(),
        poster,
        batch: sink.batch.get(),
        consumer: instance_id.clone(),
    });
    let ready = Arc::new(AtomicBool::new(false));
    let tasks = TaskTracker::new();
    if let Some(sentinels) = crate::store::sentinel::Sentinels::from_config(&config) {
        tasks.spawn(crate::store::sentinel::follow(
            store.clone(),
            sentinels,
            shutdown.clone(),
        ));
    }
    tasks.spawn(serve_health(
        listener,
        store.clone(),
        ready.clone(),
        metrics,
        shutdown.clone(),
    ));
    tracing::info!(%addr, instance_id, mode = "sink", url = sink.url, "listening");

    let mut coordinator = Coordinator {
        shared,
        owned: HashMap::new(),
        grouped: BTreeSet::new(),
        discovery: Discovery::default(),
        tasks: tasks.clone(),
        library_loaded: false,
        max_lag_ms: u64::try_from(sink.max_lag.as_millis()).unwrap_or(u64::MAX),
        audit_enabled: sink.audit,
        audit: None,
    };
    loop {
        match coordinator.pass().await {
            Ok(()) => ready.store(true, Ordering::Release),
            Err(e) => tracing::warn!(error = %e, "sink pass failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(DISCOVERY_EVERY) => {}
        }
    }
    coordinator.stop_all().await;
    tasks.close();
    tasks.wait().await;
    tracing::info!("sink stopped");
    Ok(())
}

struct Coordinator {
    shared: Arc<Shared>,
    owned: HashMap<String, Owned>,
    /// Tables whose stream has the sink group (created once per process).
    grouped: BTreeSet<String>,
    discovery: Discovery,
    tasks: TaskTracker,
    library_loaded: bool,
    max_lag_ms: u64,
    /// `RTS_SINK_AUDIT`: the audit stream is delivered too.
    audit_enabled: bool,
    /// Stops the audit stream's worker while this sink holds its lease.
    audit: Option<CancellationToken>,
}

impl Coordinator {
    fn store(&self) -> &Store {
        &self.shared.store
    }

    async fn pass(&mut self) -> Result<(), StoreError> {
        if !self.library_loaded {
            self.store().load_library().await?;
            self.library_loaded = true;
        }
        // Workers that ended by themselves (never, unless stopped) are forgotten.
        self.owned.retain(|_, o| !o.stop.is_cancelled());
        let live = self.announce().await?;
        let store = self.shared.store.clone();
        let tables = self.discovery.tables(&store).await?;
        for table in &tables {
            if !self.grouped.contains(table) {
                self.create_group(table).await?;
                self.grouped.insert(table.clone());
            }
        }
        self.grouped.retain(|t| tables.contains(t));
        // Renew what we hold; a lease lost (we were too slow) stops its worker.
        let held: Vec<String> = self.owned.keys().cloned().collect();
        for table in held {
            if !tables.contains(&table) || !self.lease(&table, LEASE_TTL).await? {
                tracing::info!(table, "sink no longer owns the table");
                if let Some(o) = self.owned.remove(&table) {
                    o.stop.cancel();
                }
            }
        }
        // The fair share; tables are tried in an order of their own per
        // sink, so sinks starting together do not all race for the same ones.
        let fair = tables.len().div_ceil(live.max(1));
        let mut order: Vec<&String> = tables
            .iter()
            .filter(|t| !self.owned.contains_key(*t))
            .collect();
        let me = self.shared.consumer.clone();
        order.sort_by_key(|t| hash(&me, t));
        for table in order {
            if self.owned.len() >= fair {
                break;
            }
            if self.lease(table, LEASE_TTL).await? {
                tracing::info!(table, "sink owns the table");
                self.start(table.clone());
            }
        }
        while self.owned.len() > fair {
            let Some(table) = self.owned.keys().next().cloned() else {
                break;
            };
            tracing::info!(table, fair, "sink gives a table up to spread the load");
            if let Some(o) = self.owned.remove(&table) {
                o.stop.cancel();
            }
            self.lease(&table, Duration::ZERO).await?;
        }
        self.audit_pass().await?;
        self.upkeep().await;
        Ok(())
    }

    /// Takes or renews the audit stream's lease (`RTS_SINK_AUDIT`), and
    /// runs its worker while it holds it.
    async fn audit_pass(&mut self) -> Result<(), StoreError> {
        if !self.audit_enabled {
            return Ok(());
        }
        let keys = self.store().keys.audit_lease_keys();
        let ttl = LEASE_TTL.as_millis() as u64;
        let held = sink_group::lease_at(self.store(), &keys, &self.shared.consumer, ttl).await?;
        match (held, &self.audit) {
            (true, None) => {
                tracing::info!("sink delivers the audit stream");
                let stop = CancellationToken::new();
                self.tasks
                    .spawn(audit::run(self.shared.clone(), stop.clone()));
                self.audit = Some(stop);
            }
            (false, Some(stop)) => {
                tracing::info!("sink no longer delivers the audit stream");
                stop.cancel();
                self.audit = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// Marks this sink alive; returns how many sinks are.
    async fn announce(&self) -> Result<usize, StoreError> {
        let alive = SINK_ALIVE.as_millis() as u64;
        sink_group::announce(self.store(), &self.shared.consumer, now_ms(), alive).await
    }

    async fn create_group(&self, table: &str) -> Result<(), StoreError> {
        if sink_group::create_group(self.store(), table).await? {
            tracing::info!(table, "sink group created at the stream's start");
        }
        Ok(())
    }

    /// Takes or renews (ttl > 0) or gives up (ttl = 0) a table's lease.
    async fn lease(&self, table: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ttl = ttl.as_millis() as u64;
        sink_group::lease(self.store(), table, &self.shared.consumer, ttl).await
    }

    fn start(&mut self, table: String) {
        let stop = CancellationToken::new();
        let lag_ms = Arc::new(AtomicU64::new(0));
        self.tasks.spawn(worker::run(
            self.shared.clone(),
            table.clone(),
            stop.clone(),
            lag_ms.clone(),
        ));
        self.owned.insert(table, Owned { stop, lag_ms });
    }

    /// For each owned table: its lag (entries not yet acknowledged, from
    /// XINFO GROUPS `lag` + `pending`), and the retention floor the commit
    /// function trims by: the oldest unacknowledged entry's time, but never
    /// older than RTS_SINK_MAX_LAG_SECS (the key expires after that long).
    async fn upkeep(&self) {
        let mut entries = 0u64;
        let now = now_ms();
        let oldest_kept = now.saturating_sub(self.max_lag_ms);
        for table in self.owned.keys() {
            match sink_group::group_state(self.store(), table).await {
                Ok(state) => {
                    let (behind, oldest) = state.map_or((0, None), |g| (g.behind, g.oldest));
                    entries += behind;
                    let oldest_ms = oldest.map_or(now, super::store::sink_group::Position::ms);
                    if oldest_ms < oldest_kept {
                        if let Some(from) = oldest {
                            self.trim_lost(table, from, oldest_kept).await;
                        }
                    }
                    let floor = oldest_ms.max(oldest_kept);
                    let kept =
                        sink_group::keep_floor(self.store(), table, floor, self.max_lag_ms).await;
                    if let Err(e) = kept {
                        tracing::warn!(table, error = %e, "cannot keep the retention floor");
                    }
                }
                Err(e) => tracing::warn!(table, error = %e, "cannot read the sink group"),
            }
        }
        let oldest = self
            .owned
            .values()
            .map(|o| o.lag_ms.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        crate::metrics::sink_lag(entries, oldest as f64 / 1000.0, self.owned.len());
    }

    /// The sink is behind by more than RTS_SINK_MAX_LAG_SECS on `table`:
    /// the entries it has not acknowledged from before `cut_ms` are trimmed
    /// (exactly), counted and logged as lost to the sink.
    async fn trim_lost(&self, table: &str, from: sink_group::Position, cut_ms: u64) {
        match sink_group::trim_before(self.store(), table, from, cut_ms).await {
            Ok(0) => {}
            Ok(lost) => {
                crate::metrics::sink_lost(lost);
                tracing::error!(table, lost, max_lag_ms = self.max_lag_ms,
                    "entries older than RTS_SINK_MAX_LAG_SECS were never acknowledged: trimmed, lost to the sink");
            }
            Err(e) => tracing::warn!(table, error = %e, "cannot trim entries past the maximum lag"),
        }
    }

    /// Shutdown: workers finish their POST in flight, leases are given up.
    async fn stop_all(&mut self) {
        for o in self.owned.values() {
            o.stop.cancel();
        }
        let audit = self.audit.take();
        if let Some(stop) = &audit {
            stop.cancel();
        }
        let tables: Vec<String> = self.owned.drain().map(|(t, _)| t).collect();
        self.tasks.close();
        self.tasks.wait().await;
        for table in tables {
            if let Err(e) = self.lease(&table, Duration::ZERO).await {
                tracing::warn!(table, error = %e, "cannot give the lease up; it expires by itself");
            }
        }
        if audit.is_some() {
            let keys = self.store().keys.audit_lease_keys();
            let given = sink_group::lease_at(self.store(), &keys, &self.shared.consumer, 0).await;
            if let Err(e) = given {
                tracing::warn!(error = %e, "cannot give the audit lease up; it expires by itself");
            }
        }
    }
}

fn hash(a: &str, b: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    a.hash(&mut h);
    b.hash(&mut h);
    h.finish()
}

/// `/healthz`, `/readyz` (Redis answers and the first discovery ran) and
/// `/metrics`, on the accept loop the sidecar uses.
async fn serve_health(
    listener: TcpListener,
    store: Arc<Store>,
    ready: Arc<AtomicBool>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) {
    let conns = TaskTracker::new();
    let route = move |req: Request<hyper::body::Incoming>, _peer| {
        let (store, ready, metrics) = (store.clone(), ready.clone(), metrics.clone());
        async move { Ok::<_, Infallible>(health_route(req, &store, &ready, &metrics).await) }
    };
    crate::http::server::accept_loop(listener, shutdown, conns.clone(), route).await;
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), conns.wait()).await;
}

async fn health_route(
    req: Request<hyper::body::Incoming>,
    store: &Store,
    ready: &AtomicBool,
    metrics: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    let (status, body, content_type) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, "ok".to_owned(), "text/plain"),
        (&Method::GET, "/readyz") => {
            if ready.load(Ordering::Acquire) && store.ping().await {
                (StatusCode::OK, "ready".to_owned(), "text/plain")
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready".to_owned(),
                    "text/plain",
                )
            }
        }
        (&Method::GET, "/metrics") => {
            metrics.run_upkeep();
            (
                StatusCode::OK,
                metrics.render(),
                "text/plain; version=0.0.4",
            )
        }
        _ => (StatusCode::NOT_FOUND, "not found".to_owned(), "text/plain"),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}
