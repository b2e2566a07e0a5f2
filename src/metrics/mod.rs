//! Every metric the sidecar and the sink export, declared once in
//! [`catalog`] (name, kind, help, unit, buckets, label key and label enum),
//! and the small functions the rest of the code calls to emit them.
//!
//! ```text
//! catalog::declare! ──▶ install(): buckets, describe_*, every series at 0
//!                   ──▶ ALL / SINK_ALL (grafana/ check, docs)
//! call site ──label enum (labels)──▶ helper below ──▶ recorder ──▶ GET /metrics
//! ```
//!
//! Code elsewhere never calls `metrics::counter!` and friends (clippy's
//! `disallowed-macros`, clippy.toml): a metric is emitted through a helper
//! here, with a label enum, never a string. Adding a metric is one entry
//! in `catalog` (plus a label enum in `labels` when it has a label) and a
//! helper here.

// The one module allowed to use the recorder's macros (clippy.toml).
#![allow(clippy::disallowed_macros)]

pub mod catalog;
pub mod labels;
#[cfg(test)]
mod tests;

use std::sync::LazyLock;
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::protocol::ServerEvent;
use catalog::{Declared, Handles, Kind};
pub use catalog::{ALL, SINK_ALL};
pub use labels::{
    Audience, AuditDropped, AuthFailure, CommitOutcome, ConnectionRefused, ConnectionState,
    EventIn, FrameRejected, Label, RedisErrorKind, SinkOutcome, UndoOutcome, WriterError,
};

/// Installs the Prometheus recorder with every histogram's buckets, then
/// describes and registers the sidecar's series. Only one recorder can be
/// global per process; a second call (several sidecars in one test
/// process) keeps the first and returns a handle of its own that renders
/// nothing.
pub fn install() -> PrometheusHandle {
    let recorder = builder().build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::debug!("a metrics recorder is already installed");
    }
    register(catalog::SIDECAR);
    handle
}

/// Describes and exports every sink metric from the start (counters at 0).
pub fn register_sink() {
    register(catalog::SINK);
}

/// The exporter, with the buckets each histogram declares.
fn builder() -> PrometheusBuilder {
    let histograms = catalog::SIDECAR.iter().chain(catalog::SINK);
    let mut builder = PrometheusBuilder::new();
    for metric in histograms {
        let Some(buckets) = metric.buckets else {
            continue;
        };
        match builder.set_buckets_for_metric(Matcher::Full(metric.name.into()), buckets) {
            Ok(b) => builder = b,
            Err(e) => {
                tracing::error!(error = %e, "invalid histogram buckets; using defaults");
                return PrometheusBuilder::new();
            }
        }
    }
    builder
}

/// Describes each metric and exports each of its series at zero, so
/// `rate()` sees the first event and every panel has a series.
fn register(family: &[Declared]) {
    for metric in family {
        describe(metric);
        for series in metric.series() {
            let labels: Vec<metrics::Label> = series
                .map(|(key, value)| metrics::Label::new(key, value))
                .into_iter()
                .collect();
            match metric.kind {
                Kind::Counter => metrics::counter!(metric.name, labels).increment(0),
                Kind::Gauge => metrics::gauge!(metric.name, labels).increment(0.0),
                Kind::Histogram => {
                    let _ = metrics::histogram!(metric.name, labels);
                }
            }
        }
    }
}

fn describe(metric: &Declared) {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    let (name, help) = (metric.name, metric.help);
    match (metric.kind, metric.unit) {
        (Kind::Counter, Some(unit)) => describe_counter!(name, unit, help),
        (Kind::Counter, None) => describe_counter!(name, help),
        (Kind::Gauge, Some(unit)) => describe_gauge!(name, unit, help),
        (Kind::Gauge, None) => describe_gauge!(name, help),
        (Kind::Histogram, Some(unit)) => describe_histogram!(name, unit, help),
        (Kind::Histogram, None) => describe_histogram!(name, help),
    }
}

// Handles of the series updated once per delivered frame, event, message
// or commit, looked up once instead of on every update (the recorder is
// installed before any frame flows, so the first use binds to it).
static BYTES_OUT: LazyLock<Counter> = LazyLock::new(|| catalog::BYTES_OUT.handle());
static BYTES_IN: LazyLock<Counter> = LazyLock::new(|| catalog::BYTES_IN.handle());
static FANOUT_LATENCY: LazyLock<Histogram> = LazyLock::new(|| catalog::FANOUT_LATENCY.handle());
static EVENTS_DELIVERED: LazyLock<Counter> = LazyLock::new(|| catalog::EVENTS_DELIVERED.handle());
static BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| catalog::DELIVERY_BATCH_SIZE.handle());
static COMMIT_DURATION: LazyLock<Histogram> = LazyLock::new(|| catalog::COMMIT_DURATION.handle());
static PIPELINE_SIZE: LazyLock<Histogram> = LazyLock::new(|| catalog::REDIS_PIPELINE_SIZE.handle());
static MESSAGES_IN: LazyLock<Handles<EventIn>> = LazyLock::new(|| catalog::MESSAGES_IN.handles());
static MESSAGES_OUT: LazyLock<Handles<ServerEvent>> =
    LazyLock::new(|| catalog::MESSAGES_OUT.handles());
static COMMITS: LazyLock<Handles<CommitOutcome>> = LazyLock::new(|| catalog::COMMITS.handles());
static FANOUT_FRAMES_BUILT: LazyLock<Handles<Audience>> =
    LazyLock::new(|| catalog::FANOUT_FRAMES_BUILT.handles());

pub fn connection_opened() {
    catalog::CONNECTIONS
        .at(ConnectionState::Open)
        .increment(1.0);
}
pub fn connection_closed(authenticated: bool) {
    catalog::CONNECTIONS
        .at(ConnectionState::Open)
        .decrement(1.0);
    if authenticated {
        connection_unauthenticated();
    }
}
pub fn connection_authenticated() {
    catalog::CONNECTIONS
        .at(ConnectionState::Authenticated)
        .increment(1.0);
}
/// An open connection that is no longer authenticated (a Socket.IO
/// client's DISCONNECT).
pub fn connection_unauthenticated() {
    catalog::CONNECTIONS
        .at(ConnectionState::Authenticated)
        .decrement(1.0);
}
pub fn message_in(event: EventIn, bytes: usize) {
    MESSAGES_IN.get(event).increment(1);
    BYTES_IN.increment(bytes as u64);
}
pub fn message_out(event: ServerEvent) {
    messages_out(event, 1);
}
pub fn messages_out(event: ServerEvent, n: u64) {
    MESSAGES_OUT.get(event).increment(n);
}

pub fn redis_failover() {
    catalog::REDIS_FAILOVERS.handle().increment(1);
}
/// A pipeline of commits and its durability wait: how long, and whether
/// it was confirmed.
pub fn durable_wait(took: Duration, confirmed: bool) {
    catalog::DURABLE_WAIT.handle().record(took.as_secs_f64());
    if !confirmed {
        catalog::DURABLE_UNCONFIRMED.handle().increment(1);
    }
}
pub fn redis_pipeline(calls: usize) {
    PIPELINE_SIZE.record(calls as f64);
}

pub fn frame_out(bytes: usize, event_ms: Option<u64>) {
    BYTES_OUT.increment(bytes as u64);
    if let Some(ms) = event_ms {
        let lag = crate::now_ms().saturating_sub(ms);
        FANOUT_LATENCY.record(lag as f64 / 1000.0);
    }
}
pub fn commit_done(elapsed: Duration, outcome: CommitOutcome) {
    COMMIT_DURATION.record(elapsed.as_secs_f64());
    COMMITS.get(outcome).increment(1);
}
/// An undo or redo was answered (or failed: `Error`, `Busy`).
pub fn undo_done(outcome: UndoOutcome) {
    catalog::UNDOS.at(outcome).increment(1);
}
pub fn events_delivered(events: usize, subscribers: usize) {
    EVENTS_DELIVERED.increment((events * subscribers) as u64);
    BATCH_SIZE.record(events as f64);
}
/// A fan-out frame was encoded for an audience (`masked`: a permission
/// class with hidden fields); frames per delivery show the encodings each
/// event costs.
pub fn fanout_frame_built(masked: bool) {
    let audience = if masked {
        Audience::Masked
    } else {
        Audience::Full
    };
    FANOUT_FRAMES_BUILT.get(audience).increment(1);
}
/// One outbound message compressed (`shrunk`), or tried and sent plain.
pub fn frame_compressed(shrunk: bool, saved: usize) {
    if shrunk {
        catalog::FRAMES_COMPRESSED.handle().increment(1);
        catalog::COMPRESSION_BYTES_SAVED
            .handle()
            .increment(saved as u64);
    } else {
        catalog::FRAMES_NOT_SHRUNK.handle().increment(1);
    }
}
/// One HTTP response compressed, saving `saved` bytes.
pub fn http_body_compressed(saved: usize) {
    catalog::HTTP_BODIES_COMPRESSED.handle().increment(1);
    catalog::HTTP_BYTES_SAVED.handle().increment(saved as u64);
}
/// One request body refused for its content coding.
pub fn http_body_refused() {
    catalog::HTTP_BODIES_REFUSED.handle().increment(1);
}
pub fn slow_consumer_dropped() {
    catalog::SLOW_CONSUMER_DISCONNECTS.handle().increment(1);
}
pub fn relay_deferred() {
    catalog::RELAYS_DEFERRED.handle().increment(1);
}
/// Cursor or editing relays a connection with `relay: "viewport"` was
/// not sent: the record was outside its viewport.
pub fn relays_skipped_viewport(n: u64) {
    if n > 0 {
        catalog::RELAYS_SKIPPED_VIEWPORT.handle().increment(n);
    }
}
/// v1.3 (2.2): `n` filters evaluated, `withheld` records left out.
pub fn rows_filtered(n: u64, withheld: u64) {
    if n > 0 {
        catalog::FILTER_EVALUATIONS.handle().increment(n);
    }
    if withheld > 0 {
        catalog::ROWS_WITHHELD.handle().increment(withheld);
    }
}
/// A read of record states for the filtered fan-out failed.
pub fn filter_state_read_failed() {
    catalog::FILTER_STATE_READ_FAILURES.handle().increment(1);
}
/// One fan-out's filter evaluations and enter/leave decisions.
pub fn filtered_fanout(evaluations: u64, moves: u64) {
    if evaluations > 0 {
        catalog::FILTER_EVALUATIONS.handle().increment(evaluations);
    }
    if moves > 0 {
        catalog::VIEW_MOVES.handle().increment(moves);
    }
}
/// Cohorts of filtered subscribers on this sidecar, by change.
pub fn filter_cohorts(delta: f64) {
    catalog::FILTER_COHORTS.handle().increment(delta);
}
/// A `view` event applied to this sidecar's view filters.
pub fn view_applied() {
    catalog::VIEW_EVENTS_APPLIED.handle().increment(1);
}
/// A view filter that could not be read (taken as no filter).
pub fn view_unreadable() {
    catalog::VIEW_FILTERS_UNREADABLE.handle().increment(1);
}
/// A view filter not kept: the registry is full.
pub fn view_not_kept() {
    catalog::VIEWS_NOT_KEPT.handle().increment(1);
}
/// A PUT or GET of a view's filter refused or failed.
pub fn view_api_failed() {
    catalog::VIEW_API_FAILURES.handle().increment(1);
}
/// A request refused because its path does not apply row grants yet.
pub fn row_grant_refused() {
    catalog::ROW_GRANT_REFUSED.handle().increment(1);
}
pub fn editing_expired() {
    catalog::EDITING_EXPIRED.handle().increment(1);
}
pub fn editing_expiry_failed() {
    catalog::EDITING_EXPIRY_FAILURES.handle().increment(1);
}
pub fn rate_limited() {
    catalog::RATE_LIMITED.handle().increment(1);
}
pub fn frame_rejected(reason: FrameRejected) {
    catalog::FRAMES_REJECTED.at(reason).increment(1);
}
pub fn tables_tailed(n: usize) {
    catalog::TABLES_TAILED.handle().set(n as f64);
}
pub fn entry_skipped() {
    catalog::ENTRIES_SKIPPED.handle().increment(1);
}
pub fn ring_entries_delivered(n: usize) {
    catalog::RING_ENTRIES.handle().increment(n as u64);
}
pub fn redis_error(kind: RedisErrorKind) {
    catalog::REDIS_ERRORS.at(kind).increment(1);
}
pub fn redis_reconnect() {
    catalog::REDIS_RECONNECTS.handle().increment(1);
}
pub fn auth_failure(reason: AuthFailure) {
    catalog::AUTH_FAILURES.at(reason).increment(1);
}
pub fn consumer_group_lag(entries: u64) {
    catalog::CONSUMER_GROUP_LAG.handle().set(entries as f64);
}
pub fn presence_users(n: u64) {
    catalog::PRESENCE_USERS.handle().set(n as f64);
}
pub fn redis_up(up: bool) {
    catalog::REDIS_UP.handle().set(if up { 1.0 } else { 0.0 });
}
pub fn presence_notice_dropped() {
    catalog::PRESENCE_NOTICES_DROPPED.handle().increment(1);
}
pub fn writer_error(kind: WriterError) {
    catalog::WRITER_ERRORS.at(kind).increment(1);
}
pub fn connection_refused(reason: ConnectionRefused) {
    catalog::CONNECTIONS_REFUSED.at(reason).increment(1);
}

/// Audit entries appended.
pub fn audit_written(n: usize) {
    catalog::AUDIT_WRITTEN.handle().increment(n as u64);
}
/// Audit records not written, and why.
pub fn audit_dropped(reason: AuditDropped, n: usize) {
    catalog::AUDIT_DROPPED.at(reason).increment(n as u64);
}
/// A failed append to the audit stream.
pub fn audit_write_failed() {
    catalog::AUDIT_WRITE_FAILURES.handle().increment(1);
}

/// A POST of the sink and how it ended.
pub fn sink_delivery(outcome: SinkOutcome, events: usize, took: Duration) {
    catalog::SINK_DELIVERIES.at(outcome).increment(1);
    catalog::SINK_REQUEST_DURATION
        .handle()
        .record(took.as_secs_f64());
    match outcome {
        SinkOutcome::Delivered => catalog::SINK_EVENTS.handle().increment(events as u64),
        SinkOutcome::DeadLettered => catalog::SINK_DEAD_LETTERED.handle().increment(1),
        SinkOutcome::Retried => {}
    }
}

/// Entries trimmed before the sink acknowledged them.
pub fn sink_lost(entries: usize) {
    catalog::SINK_LOST.handle().increment(entries as u64);
}

/// The sink's lag over the tables it owns, and how many it owns.
pub fn sink_lag(entries: u64, seconds: f64, tables: usize) {
    catalog::SINK_LAG_ENTRIES.handle().set(entries as f64);
    catalog::SINK_LAG_SECONDS.handle().set(seconds);
    catalog::SINK_TABLES.handle().set(tables as f64);
}
