//! Every metric the sidecar exports, by name, in one place (Grafana's
//! dashboard and its test read this list). Code elsewhere calls the small
//! functions below, never `metrics::counter!` with a literal name.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::protocol::ServerEvent;

pub const CONNECTIONS: &str = "rtsync_connections";
pub const MESSAGES_IN: &str = "rtsync_messages_in_total";
pub const MESSAGES_OUT: &str = "rtsync_messages_out_total";
pub const BYTES_IN: &str = "rtsync_bytes_in_total";
pub const BYTES_OUT: &str = "rtsync_bytes_out_total";
pub const COMMIT_DURATION: &str = "rtsync_commit_duration_seconds";
pub const COMMITS: &str = "rtsync_commits_total";
pub const FANOUT_LATENCY: &str = "rtsync_fanout_latency_seconds";
pub const EVENTS_DELIVERED: &str = "rtsync_events_delivered_total";
pub const FANOUT_FRAMES_BUILT: &str = "rtsync_fanout_frames_built_total";
pub const DELIVERY_BATCH_SIZE: &str = "rtsync_delivery_batch_size";
pub const SLOW_CONSUMER_DISCONNECTS: &str = "rtsync_slow_consumer_disconnects_total";
pub const RATE_LIMITED: &str = "rtsync_rate_limited_total";
pub const FRAMES_REJECTED: &str = "rtsync_frames_rejected_total";
pub const TABLES_TAILED: &str = "rtsync_tables_tailed";
pub const ENTRIES_SKIPPED: &str = "rtsync_stream_entries_skipped_total";
pub const REDIS_ERRORS: &str = "rtsync_redis_errors_total";
pub const REDIS_RECONNECTS: &str = "rtsync_redis_reconnects_total";
pub const AUTH_FAILURES: &str = "rtsync_auth_failures_total";
pub const CONSUMER_GROUP_LAG: &str = "rtsync_consumer_group_lag_entries";
pub const PRESENCE_USERS: &str = "rtsync_presence_users";
pub const REDIS_UP: &str = "rtsync_redis_up";
pub const CONNECTIONS_REFUSED: &str = "rtsync_connections_refused_total";
pub const WRITER_ERRORS: &str = "rtsync_writer_errors_total";
pub const PRESENCE_NOTICES_DROPPED: &str = "rtsync_presence_notices_dropped_total";
pub const REDIS_PIPELINE_SIZE: &str = "rtsync_redis_pipeline_size";
pub const RELAYS_DEFERRED: &str = "rtsync_presence_relays_deferred_total";
pub const DURABLE_WAIT: &str = "rtsync_durable_wait_seconds";
pub const REDIS_FAILOVERS: &str = "rtsync_redis_failovers_total";
pub const DURABLE_UNCONFIRMED: &str = "rtsync_durable_unconfirmed_total";

pub const SINK_LAG_ENTRIES: &str = "rtsync_sink_lag_entries";
pub const SINK_LAG_SECONDS: &str = "rtsync_sink_lag_seconds";
pub const SINK_DELIVERIES: &str = "rtsync_sink_deliveries_total";
pub const SINK_DEAD_LETTERED: &str = "rtsync_sink_dead_lettered_total";
pub const SINK_REQUEST_DURATION: &str = "rtsync_sink_request_duration_seconds";
pub const SINK_EVENTS: &str = "rtsync_sink_events_delivered_total";
pub const SINK_LOST: &str = "rtsync_sink_entries_lost_total";
pub const SINK_TABLES: &str = "rtsync_sink_tables_owned";

/// Every name `rtsync sink` exports (docs/protocol.md section 9).
pub const SINK_ALL: &[&str] = &[
    SINK_LAG_ENTRIES,
    SINK_LAG_SECONDS,
    SINK_DELIVERIES,
    SINK_DEAD_LETTERED,
    SINK_REQUEST_DURATION,
    SINK_EVENTS,
    SINK_LOST,
    SINK_TABLES,
];

/// Every exported name, for documentation and the dashboard check.
pub const ALL: &[&str] = &[
    CONNECTIONS,
    MESSAGES_IN,
    MESSAGES_OUT,
    BYTES_IN,
    BYTES_OUT,
    COMMIT_DURATION,
    COMMITS,
    FANOUT_LATENCY,
    EVENTS_DELIVERED,
    FANOUT_FRAMES_BUILT,
    DELIVERY_BATCH_SIZE,
    SLOW_CONSUMER_DISCONNECTS,
    RATE_LIMITED,
    FRAMES_REJECTED,
    TABLES_TAILED,
    ENTRIES_SKIPPED,
    REDIS_ERRORS,
    REDIS_RECONNECTS,
    AUTH_FAILURES,
    CONSUMER_GROUP_LAG,
    PRESENCE_USERS,
    REDIS_UP,
    CONNECTIONS_REFUSED,
    WRITER_ERRORS,
    PRESENCE_NOTICES_DROPPED,
    REDIS_PIPELINE_SIZE,
    RELAYS_DEFERRED,
    DURABLE_WAIT,
    DURABLE_UNCONFIRMED,
    REDIS_FAILOVERS,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the Prometheus recorder. Only one recorder can be global per
/// process; a second call (several sidecars in one test process) keeps the
/// first and returns a handle of its own that renders nothing.
pub fn install() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(DELIVERY_BATCH_SIZE.into()), SIZE_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(REDIS_PIPELINE_SIZE.into()), SIZE_BUCKETS)
        });
    let builder = match builder {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "invalid histogram buckets; using defaults");
            PrometheusBuilder::new()
        }
    };
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::debug!("a metrics recorder is already installed");
    }
    describe();
    register_all();
    handle
}

/// Every server event's name, the `event` label of messages sent.
const SERVER_EVENT_NAMES: [&str; ServerEvent::ALL.len()] = {
    let mut names = [""; ServerEvent::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = ServerEvent::ALL[i].name();
        i += 1;
    }
    names
};

/// The label values each labelled counter is exported with from the
/// start, so `rate()` sees the first event and every panel has a series.
const LABELS: &[(&str, &str, &[&str])] = &[
    (FANOUT_FRAMES_BUILT, "audience", &["full", "masked"]),
    (MESSAGES_OUT, "event", &SERVER_EVENT_NAMES),
    (
        COMMITS,
        "status",
        &[
            "applied",
            "merged",
            "overwritten",
            "rejected",
            "duplicate",
            "error",
        ],
    ),
    (REDIS_ERRORS, "kind", &["unavailable", "timeout", "other"]),
    (
        FRAMES_REJECTED,
        "reason",
        &[
            "too_large",
            "decode",
            "invalid",
            "protocol",
            "attachments",
            "timeout",
        ],
    ),
    (
        AUTH_FAILURES,
        "reason",
        &[
            "missing",
            "expired",
            "not_yet_valid",
            "invalid",
            "claims",
            "timeout",
            "not_authenticated",
        ],
    ),
    (
        CONNECTIONS_REFUSED,
        "reason",
        &["sidecar_full", "per_user", "unauthenticated_evicted"],
    ),
    (WRITER_ERRORS, "kind", &["timeout", "failed"]),
];

/// Exports every series the dashboard reads, at zero.
fn register_all() {
    let events_in = crate::protocol::messages::ClientEvent::ALL
        .map(super::protocol::messages::ClientEvent::name);
    for event in events_in.iter().chain(&["unknown", "invalid"]) {
        counter!(MESSAGES_IN, "event" => *event).increment(0);
    }
    for (name, label, values) in LABELS {
        for value in *values {
            counter!(*name, *label => *value).increment(0);
        }
    }
    for name in [
        BYTES_IN,
        BYTES_OUT,
        EVENTS_DELIVERED,
        SLOW_CONSUMER_DISCONNECTS,
        RATE_LIMITED,
        ENTRIES_SKIPPED,
        REDIS_RECONNECTS,
        PRESENCE_NOTICES_DROPPED,
        RELAYS_DEFERRED,
        DURABLE_UNCONFIRMED,
        REDIS_FAILOVERS,
    ] {
        counter!(name).increment(0);
    }
    for state in ["open", "authenticated"] {
        gauge!(CONNECTIONS, "state" => state).increment(0.0);
    }
    for name in [TABLES_TAILED, CONSUMER_GROUP_LAG, PRESENCE_USERS, REDIS_UP] {
        gauge!(name).increment(0.0);
    }
    for name in [
        COMMIT_DURATION,
        FANOUT_LATENCY,
        DELIVERY_BATCH_SIZE,
        REDIS_PIPELINE_SIZE,
        DURABLE_WAIT,
    ] {
        let _ = histogram!(name);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(CONNECTIONS, "Open WebSocket connections by state");
    describe_counter!(MESSAGES_IN, "Client frames received, by event");
    describe_counter!(MESSAGES_OUT, "Frames queued to clients, by event");
    describe_counter!(BYTES_IN, Unit::Bytes, "WebSocket payload bytes received");
    describe_counter!(BYTES_OUT, Unit::Bytes, "WebSocket payload bytes written");
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "FCALL rtsync_commit round trip"
    );
    describe_counter!(COMMITS, "Commits by result status");
    describe_histogram!(
        FANOUT_LATENCY,
        Unit::Seconds,
        "Stream entry time to frame written"
    );
    describe_counter!(
        EVENTS_DELIVERED,
        "Events delivered to subscribers (event × subscriber)"
    );
    describe_histogram!(DELIVERY_BATCH_SIZE, "Events per fan-out of one table");
    describe_histogram!(
        DURABLE_WAIT,
        Unit::Seconds,
        "Round trip of a pipeline of commits with its RTS_DURABLE_WRITES wait (WAIT/WAITAOF)"
    );
    describe_counter!(
        REDIS_FAILOVERS,
        "Times the Redis primary changed and the connections moved to the new one (Sentinel)"
    );
    describe_counter!(
        DURABLE_UNCONFIRMED,
        "Pipelines of commits whose durability was not confirmed in time (answered timeout)"
    );
    describe_counter!(
        FANOUT_FRAMES_BUILT,
        "Frames encoded by the fan-out, one per audience (framing, and full or masked field set) per delivery"
    );
    describe_histogram!(
        REDIS_PIPELINE_SIZE,
        "Function calls sent together in one pipeline (group commit)"
    );
    describe_counter!(
        SLOW_CONSUMER_DISCONNECTS,
        "Connections closed 4503 for a full queue"
    );
    describe_counter!(RATE_LIMITED, "Requests refused by the rate limit");
    describe_counter!(
        RELAYS_DEFERRED,
        "Cursor/selection updates held back by the per-user relay rate"
    );
    describe_counter!(FRAMES_REJECTED, "Client frames refused, by reason");
    describe_gauge!(TABLES_TAILED, "Table streams this sidecar reads");
    describe_counter!(ENTRIES_SKIPPED, "Malformed stream entries skipped");
    describe_counter!(REDIS_ERRORS, "Redis command failures by kind");
    describe_counter!(REDIS_RECONNECTS, "Stream reader reconnections to Redis");
    describe_counter!(AUTH_FAILURES, "Authentication failures by reason");
    describe_gauge!(
        CONSUMER_GROUP_LAG,
        "Largest consumer-group lag of the tables this sidecar reads, in entries"
    );
    describe_gauge!(
        PRESENCE_USERS,
        "Users present on the tables this sidecar serves"
    );
    describe_gauge!(REDIS_UP, "1 while Redis answers, else 0");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections refused by a limit, by reason"
    );
    describe_counter!(
        PRESENCE_NOTICES_DROPPED,
        "Presence notices dropped because the relay queue was full"
    );
    describe_counter!(
        WRITER_ERRORS,
        "Connections closed because a write failed or timed out, by kind"
    );
}

pub fn connection_opened() {
    gauge!(CONNECTIONS, "state" => "open").increment(1.0);
}
pub fn connection_closed(authenticated: bool) {
    gauge!(CONNECTIONS, "state" => "open").decrement(1.0);
    if authenticated {
        gauge!(CONNECTIONS, "state" => "authenticated").decrement(1.0);
    }
}
pub fn connection_authenticated() {
    gauge!(CONNECTIONS, "state" => "authenticated").increment(1.0);
}
/// An open connection that is no longer authenticated (a Socket.IO
/// client's DISCONNECT).
pub fn connection_unauthenticated() {
    gauge!(CONNECTIONS, "state" => "authenticated").decrement(1.0);
}
pub fn message_in(event: &'static str, bytes: usize) {
    labeled(MESSAGES_IN, "event", event).increment(1);
    BYTES_IN_C.increment(bytes as u64);
}
pub fn message_out(event: ServerEvent) {
    messages_out(event, 1);
}
pub fn messages_out(event: ServerEvent, n: u64) {
    labeled(MESSAGES_OUT, "event", event.name()).increment(n);
}
// Handles of the series updated once per delivered frame or event, looked
// up once instead of on every update (the recorder is installed before any
// frame flows, so the first use binds to it).
static BYTES_OUT_C: LazyLock<Counter> = LazyLock::new(|| counter!(BYTES_OUT));
static BYTES_IN_C: LazyLock<Counter> = LazyLock::new(|| counter!(BYTES_IN));

/// Handles of the labeled series updated once per message or commit, by
/// (name, label value): a registry lookup builds and hashes the label set
/// on every update, which showed in the profile of the commit path.
fn labeled(name: &'static str, key: &'static str, value: &'static str) -> Counter {
    type Handles = HashMap<(&'static str, &'static str), Counter>;
    static HANDLES: LazyLock<RwLock<Handles>> = LazyLock::new(Default::default);
    if let Some(c) = crate::locks::read(&HANDLES).get(&(name, value)) {
        return c.clone();
    }
    let c = counter!(name, key => value);
    crate::locks::write(&HANDLES).insert((name, value), c.clone());
    c
}
static FANOUT_LATENCY_H: LazyLock<Histogram> = LazyLock::new(|| histogram!(FANOUT_LATENCY));
static EVENTS_DELIVERED_C: LazyLock<Counter> = LazyLock::new(|| counter!(EVENTS_DELIVERED));
static BATCH_SIZE_H: LazyLock<Histogram> = LazyLock::new(|| histogram!(DELIVERY_BATCH_SIZE));
static COMMIT_DURATION_H: LazyLock<Histogram> = LazyLock::new(|| histogram!(COMMIT_DURATION));
static PIPELINE_SIZE_H: LazyLock<Histogram> = LazyLock::new(|| histogram!(REDIS_PIPELINE_SIZE));

pub fn redis_failover() {
    counter!(REDIS_FAILOVERS).increment(1);
}
/// A pipeline of commits and its durability wait: how long, and whether
/// it was confirmed.
pub fn durable_wait(took: std::time::Duration, confirmed: bool) {
    histogram!(DURABLE_WAIT).record(took.as_secs_f64());
    if !confirmed {
        counter!(DURABLE_UNCONFIRMED).increment(1);
    }
}
pub fn redis_pipeline(calls: usize) {
    PIPELINE_SIZE_H.record(calls as f64);
}

pub fn frame_out(bytes: usize, event_ms: Option<u64>) {
    BYTES_OUT_C.increment(bytes as u64);
    if let Some(ms) = event_ms {
        let lag = crate::now_ms().saturating_sub(ms);
        FANOUT_LATENCY_H.record(lag as f64 / 1000.0);
    }
}
pub fn commit_done(elapsed: Duration, status: &'static str) {
    COMMIT_DURATION_H.record(elapsed.as_secs_f64());
    labeled(COMMITS, "status", status).increment(1);
}
pub fn events_delivered(events: usize, subscribers: usize) {
    EVENTS_DELIVERED_C.increment((events * subscribers) as u64);
    BATCH_SIZE_H.record(events as f64);
}
/// A fan-out frame was encoded for an audience (`masked`: a permission
/// class with hidden fields); frames per delivery show the encodings each
/// event costs.
pub fn fanout_frame_built(masked: bool) {
    labeled(
        FANOUT_FRAMES_BUILT,
        "audience",
        if masked { "masked" } else { "full" },
    )
    .increment(1);
}
pub fn slow_consumer_dropped() {
    counter!(SLOW_CONSUMER_DISCONNECTS).increment(1);
}
pub fn relay_deferred() {
    counter!(RELAYS_DEFERRED).increment(1);
}
pub fn rate_limited() {
    counter!(RATE_LIMITED).increment(1);
}
pub fn frame_rejected(reason: &'static str) {
    counter!(FRAMES_REJECTED, "reason" => reason).increment(1);
}
pub fn tables_tailed(n: usize) {
    gauge!(TABLES_TAILED).set(n as f64);
}
pub fn entry_skipped() {
    counter!(ENTRIES_SKIPPED).increment(1);
}
pub fn redis_error(kind: &'static str) {
    counter!(REDIS_ERRORS, "kind" => kind).increment(1);
}
pub fn redis_reconnect() {
    counter!(REDIS_RECONNECTS).increment(1);
}
pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}
pub fn consumer_group_lag(entries: u64) {
    gauge!(CONSUMER_GROUP_LAG).set(entries as f64);
}
pub fn presence_users(n: u64) {
    gauge!(PRESENCE_USERS).set(n as f64);
}
pub fn redis_up(up: bool) {
    gauge!(REDIS_UP).set(if up { 1.0 } else { 0.0 });
}
pub fn presence_notice_dropped() {
    counter!(PRESENCE_NOTICES_DROPPED).increment(1);
}

pub fn writer_error(kind: &'static str) {
    counter!(WRITER_ERRORS, "kind" => kind).increment(1);
}

pub fn connection_refused(reason: &'static str) {
    counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// Exports every sink metric from the start (counters at 0).
pub fn register_sink() {
    for outcome in ["delivered", "retried", "dead_lettered"] {
        counter!(SINK_DELIVERIES, "outcome" => outcome).increment(0);
    }
    for name in [SINK_DEAD_LETTERED, SINK_EVENTS, SINK_LOST] {
        counter!(name).increment(0);
    }
    for name in [SINK_LAG_ENTRIES, SINK_LAG_SECONDS, SINK_TABLES] {
        gauge!(name).set(0.0);
    }
    let _ = histogram!(SINK_REQUEST_DURATION);
}

/// A POST of the sink and how it ended: `delivered`, `retried` or `dead_lettered`.
pub fn sink_delivery(outcome: &'static str, events: usize, took: Duration) {
    counter!(SINK_DELIVERIES, "outcome" => outcome).increment(1);
    histogram!(SINK_REQUEST_DURATION).record(took.as_secs_f64());
    match outcome {
        "delivered" => counter!(SINK_EVENTS).increment(events as u64),
        "dead_lettered" => counter!(SINK_DEAD_LETTERED).increment(1),
        _ => {}
    }
}

/// Entries trimmed before the sink acknowledged them.
pub fn sink_lost(entries: usize) {
    counter!(SINK_LOST).increment(entries as u64);
}

/// The sink's lag over the tables it owns, and how many it owns.
pub fn sink_lag(entries: u64, seconds: f64, tables: usize) {
    gauge!(SINK_LAG_ENTRIES).set(entries as f64);
    gauge!(SINK_LAG_SECONDS).set(seconds);
    gauge!(SINK_TABLES).set(tables as f64);
}
