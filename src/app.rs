//! The state one sidecar shares between its HTTP routes, WebSocket sessions
//! and background tasks. Built once in [`crate::run`], then shared as
//! `Arc<App>`; nothing in it is per-connection.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::change::ChangeLimits;
use crate::config::Config;
use crate::hub::Hub;
use crate::store::Store;

pub struct App {
    pub config: Arc<Config>,
    /// What every change is checked against before it is committed.
    pub commit_limits: ChangeLimits,
    pub store: Arc<Store>,
    pub hub: Arc<Hub>,
    pub auth: Authenticator,
    pub metrics: PrometheusHandle,
    /// Cancelled on SIGTERM/SIGINT: sessions close with 4500.
    pub shutdown: CancellationToken,
    /// Every task the sidecar spawns, waited for on shutdown.
    pub tasks: TaskTracker,
    pub started: Instant,
    /// Set once the function library is loaded: `/readyz` waits for it.
    pub library_loaded: Arc<std::sync::atomic::AtomicBool>,
    pub connections: AtomicUsize,
    pub authenticated: AtomicUsize,
    /// Connections that have not authenticated yet (capped, oldest out).
    pub waiting: crate::waiting::Waiting,
    /// Long-polling Socket.IO sessions held here, by sid.
    pub polling: crate::socketio::polling::Registry,
    conn_tag: String,
    conn_seq: AtomicU64,
    /// Authenticated connections per user, for the per-user limit.
    per_user: Mutex<HashMap<String, usize>>,
    /// Subscriptions per user on this sidecar, for the per-user limit.
    subscriptions_per_user: Mutex<HashMap<String, usize>>,
    /// The cursor/selection relay rate per user and table.
    pub relay_gate: crate::presence::UserRelayGate,
    /// v1.3: one pending editing-expiry check per user and table.
    pub editing_expiries: crate::presence::EditingExpiries,
    /// Tables known to have a base already (see `store::bases`).
    pub known_bound: crate::store::bases::KnownBound,
    /// The audit log (see [`crate::audit`]).
    pub audit: crate::audit::Audit,
    /// v1.3: view filters by table and view (see [`crate::view`]).
    pub views: Arc<crate::view::Views>,
}

impl App {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        hub: Arc<Hub>,
        auth: Authenticator,
        metrics: PrometheusHandle,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        audit: crate::audit::Audit,
        views: Arc<crate::view::Views>,
    ) -> App {
        // Connection ids travel in stream entries (`origin`) and presence,
        // and are compared on every sidecar, so they must be unique across
        // the fleet: the instance id (so the janitor can tell a gone
        // sidecar's connections), a random per-process tag (an instance id
        // may be reused after a restart) and a counter.
        let tag = RandomState::new().hash_one((std::process::id(), crate::now_ms()));
        let tag = format!("{}.{tag:016x}", store.instance_id);
        let waiting = crate::waiting::Waiting::new(
            config.max_unauthenticated.get(),
            config.max_unauthenticated_per_ip.get(),
        );
        App {
            commit_limits: config.change_limits(),
            config,
            store,
            hub,
            auth,
            metrics,
            shutdown,
            tasks,
            started: Instant::now(),
            library_loaded: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            connections: AtomicUsize::new(0),
            authenticated: AtomicUsize::new(0),
            waiting,
            polling: Default::default(),
            conn_tag: tag,
            conn_seq: AtomicU64::new(0),
            per_user: Mutex::new(HashMap::new()),
            subscriptions_per_user: Mutex::new(HashMap::new()),
            relay_gate: crate::presence::UserRelayGate::default(),
            editing_expiries: Default::default(),
            known_bound: Default::default(),
            audit,
            views,
        }
    }

    /// Counts a new connection of `user`; false (and not counted) when the
    /// user already has `limit`.
    pub fn user_connected(&self, user: &str, limit: usize) -> bool {
        let mut map = crate::locks::lock(&self.per_user);
        let n = map.entry(user.to_owned()).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub fn user_disconnected(&self, user: &str) {
        let mut map = crate::locks::lock(&self.per_user);
        if let Some(n) = map.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(user);
            }
        }
    }

    /// Counts a new subscription of `user`; false (and not counted) when
    /// the user already has `RTS_MAX_SUBSCRIPTIONS_PER_USER` here.
    pub fn subscription_added(&self, user: &str) -> bool {
        let limit = self.config.max_subscriptions_per_user.get();
        let mut map = crate::locks::lock(&self.subscriptions_per_user);
        let n = map.entry(user.to_owned()).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub fn subscription_removed(&self, user: &str) {
        let mut map = crate::locks::lock(&self.subscriptions_per_user);
        if let Some(n) = map.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(user);
            }
        }
    }

    pub fn next_connection_id(&self) -> Arc<str> {
        let n = self.conn_seq.fetch_add(1, Ordering::Relaxed) + 1;
        Arc::from(format!("{}.{n}", self.conn_tag))
    }
}
