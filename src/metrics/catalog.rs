//! Every metric the sidecar and the sink export, each declared once: its
//! name, kind, help text, unit, histogram buckets and label (key and label
//! enum). Everything else is generated from the declaration:
//!
//! ```text
//! declare! entry ──▶ typed constant (e.g. FRAMES_REJECTED: Metric<CounterKind, FrameRejected>)
//!                │      └─▶ emission helpers in `metrics` (label enums only)
//!                ├─▶ SIDECAR / SINK tables of [`Declared`]
//!                │      └─▶ install(): buckets, describe_*, every series at zero
//!                └─▶ ALL / SINK_ALL (the dashboard check and the docs)
//! ```
//!
//! Adding a metric is adding one entry here (and a label enum in
//! `labels` if it has a label), then a helper in `metrics` that emits it.

use std::marker::PhantomData;

use metrics::Unit;

use super::labels::{
    Audience, AuditDropped, AuthFailure, CommitOutcome, ConnectionRefused, ConnectionState,
    EventIn, FrameRejected, Label, RedisErrorKind, SinkOutcome, UndoOutcome, WriterError,
};
use crate::protocol::ServerEvent;

/// Buckets of the latency histograms, in seconds.
const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Buckets of the histograms of counts (events per fan-out, calls per
/// pipeline).
const SIZE: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The type-level [`Kind`]s, so a counter's constant only offers counter
/// handles.
pub enum CounterKind {}
pub enum GaugeKind {}
pub enum HistogramKind {}

/// The label type of a metric without a label: it has no values.
pub enum NoLabel {}

/// A labelled metric's label key and its values (from the label enum).
#[derive(Debug, Clone, Copy)]
pub struct LabelSet {
    pub key: &'static str,
    pub values: fn() -> Vec<&'static str>,
}

/// One metric as declared, untyped: what registration, descriptions and
/// the name lists are generated from.
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub unit: Option<Unit>,
    pub buckets: Option<&'static [f64]>,
    pub label: Option<LabelSet>,
}

impl Declared {
    /// Every (label key, label value) series it is exported with from the
    /// start: one per label value, or one unlabelled series.
    pub fn series(&self) -> Vec<Option<(&'static str, &'static str)>> {
        match &self.label {
            Some(set) => (set.values)()
                .into_iter()
                .map(|v| Some((set.key, v)))
                .collect(),
            None => vec![None],
        }
    }
}

/// One metric, typed by its kind and its label enum: the only way the
/// emission helpers reach a series, so a label value that is not one of
/// the enum's (hence undeclared) cannot be emitted.
pub struct Metric<K, L> {
    pub name: &'static str,
    key: &'static str,
    marker: PhantomData<fn() -> (K, L)>,
}

impl<K, L> Metric<K, L> {
    const fn new(name: &'static str, key: &'static str) -> Self {
        Metric {
            name,
            key,
            marker: PhantomData,
        }
    }
}

impl<L: Label> Metric<CounterKind, L> {
    /// The series of one label value.
    pub fn at(&self, label: L) -> metrics::Counter {
        metrics::counter!(self.name, self.key => label.value())
    }

    /// A handle per label value, looked up once (see [`Handles`]).
    pub fn handles(&self) -> Handles<L> {
        let series = L::variants().into_iter().map(|l| (l, self.at(l)));
        Handles {
            name: self.name,
            key: self.key,
            series: series.collect(),
        }
    }
}

impl Metric<CounterKind, NoLabel> {
    /// Its one series (a metric without a label has no other).
    pub fn handle(&self) -> metrics::Counter {
        metrics::counter!(self.name)
    }
}

impl<L: Label> Metric<GaugeKind, L> {
    /// The series of one label value.
    pub fn at(&self, label: L) -> metrics::Gauge {
        metrics::gauge!(self.name, self.key => label.value())
    }
}

impl Metric<GaugeKind, NoLabel> {
    /// Its one series (a metric without a label has no other).
    pub fn handle(&self) -> metrics::Gauge {
        metrics::gauge!(self.name)
    }
}

impl Metric<HistogramKind, NoLabel> {
    /// Its one series (a metric without a label has no other).
    pub fn handle(&self) -> metrics::Histogram {
        metrics::histogram!(self.name)
    }
}

/// The handles of a labelled counter's series, by label value: a registry
/// lookup builds and hashes the label set on every update, which showed in
/// the profile of the commit path, so the hot counters look theirs up once.
pub struct Handles<L> {
    name: &'static str,
    key: &'static str,
    series: Vec<(L, metrics::Counter)>,
}

impl<L: Label> Handles<L> {
    /// The series of one label value, without a registry lookup.
    pub fn get(&self, label: L) -> metrics::Counter {
        match self.series.iter().find(|(l, _)| *l == label) {
            Some((_, c)) => c.clone(),
            // Every variant is in `series`; a registry lookup is the safe
            // answer should a label type list fewer.
            None => metrics::counter!(self.name, self.key => label.value()),
        }
    }
}

macro_rules! kind_marker {
    (counter) => {
        CounterKind
    };
    (gauge) => {
        GaugeKind
    };
    (histogram) => {
        HistogramKind
    };
}

macro_rules! kind_value {
    (counter) => {
        Kind::Counter
    };
    (gauge) => {
        Kind::Gauge
    };
    (histogram) => {
        Kind::Histogram
    };
}

macro_rules! label_type {
    () => {
        NoLabel
    };
    ($label:ty) => {
        $label
    };
}

macro_rules! label_key {
    () => {
        ""
    };
    ($key:literal) => {
        $key
    };
}

macro_rules! label_set {
    () => {
        None
    };
    ($key:literal => $label:ty) => {
        Some(LabelSet {
            key: $key,
            values: <$label as Label>::values,
        })
    };
}

macro_rules! optional {
    () => {
        None
    };
    ($value:expr) => {
        Some($value)
    };
}

/// Declares a family of metrics: one typed constant per metric, the
/// family's table of [`Declared`] and its list of names.
///
/// An entry: `kind CONSTANT = "exported_name" ["key" => LabelEnum]
/// in Unit buckets BUCKETS : "help";` (label, unit and buckets optional).
macro_rules! declare {
    ($(#[$tdoc:meta])* $table:ident, $(#[$ndoc:meta])* $names:ident {
        $($(#[$doc:meta])* $kind:ident $constant:ident = $name:literal
            $([$key:literal => $label:ty])? $(in $unit:ident)? $(buckets $buckets:ident)?
            : $help:literal;)+
    }) => {
        $(
            $(#[$doc])*
            pub const $constant: Metric<kind_marker!($kind), label_type!($($label)?)> =
                Metric::new($name, label_key!($($key)?));
        )+

        $(#[$tdoc])*
        pub const $table: &[Declared] = &[$(Declared {
            name: $name,
            kind: kind_value!($kind),
            help: $help,
            unit: optional!($(Unit::$unit)?),
            buckets: optional!($($buckets)?),
            label: label_set!($($key => $label)?),
        }),+];

        $(#[$ndoc])*
        pub const $names: &[&str] = &[$($name),+];
    };
}

declare! {
    /// The sidecar's metrics (`rtsync`), registered by `install`.
    SIDECAR,
    /// Every name the sidecar exports, for documentation and the dashboard check.
    ALL {
        gauge CONNECTIONS = "rtsync_connections" ["state" => ConnectionState]
            : "Open WebSocket connections by state";
        counter MESSAGES_IN = "rtsync_messages_in_total" ["event" => EventIn]
            : "Client frames received, by event";
        counter MESSAGES_OUT = "rtsync_messages_out_total" ["event" => ServerEvent]
            : "Frames queued to clients, by event";
        counter BYTES_IN = "rtsync_bytes_in_total" in Bytes
            : "WebSocket payload bytes received";
        counter BYTES_OUT = "rtsync_bytes_out_total" in Bytes
            : "WebSocket payload bytes written";
        histogram COMMIT_DURATION = "rtsync_commit_duration_seconds" in Seconds buckets LATENCY
            : "FCALL rtsync_commit round trip";
        counter COMMITS = "rtsync_commits_total" ["status" => CommitOutcome]
            : "Commits by result status";
        counter UNDOS = "rtsync_undo_total" ["status" => UndoOutcome]
            : "Undo and redo requests by result status";
        histogram FANOUT_LATENCY = "rtsync_fanout_latency_seconds" in Seconds buckets LATENCY
            : "Stream entry time to frame written";
        counter EVENTS_DELIVERED = "rtsync_events_delivered_total"
            : "Events delivered to subscribers (event × subscriber)";
        counter FANOUT_FRAMES_BUILT = "rtsync_fanout_frames_built_total" ["audience" => Audience]
            : "Frames encoded by the fan-out, one per audience (framing, and full or masked field set) per delivery";
        histogram DELIVERY_BATCH_SIZE = "rtsync_delivery_batch_size" buckets SIZE
            : "Events per fan-out of one table";
        counter SLOW_CONSUMER_DISCONNECTS = "rtsync_slow_consumer_disconnects_total"
            : "Connections closed 4503 for a full queue";
        counter FRAMES_COMPRESSED = "rtsync_frames_compressed_total"
            : "Outbound messages compressed (permessage-deflate): one per audience of a fan-out, one per reply";
        counter FRAMES_NOT_SHRUNK = "rtsync_frames_not_shrunk_total"
            : "Outbound messages compression would not shrink, sent plain";
        counter COMPRESSION_BYTES_SAVED = "rtsync_compression_bytes_saved_total"
            : "Bytes compression took off outbound messages (once per compression, not per subscriber)";
        counter HTTP_BODIES_COMPRESSED = "rtsync_http_bodies_compressed_total"
            : "HTTP responses (API, long-polling) sent gzip- or deflate-compressed";
        counter HTTP_BYTES_SAVED = "rtsync_http_compression_bytes_saved_total"
            : "Bytes compression took off HTTP responses";
        counter HTTP_BODIES_REFUSED = "rtsync_http_bodies_refused_total"
            : "Request bodies refused for their Content-Encoding (unknown, malformed, or over the limit once inflated)";
        counter VIEW_EVENTS_APPLIED = "rtsync_view_events_applied_total"
            : "View filter events applied from a table's stream (v1.3 views)";
        counter VIEW_FILTERS_UNREADABLE = "rtsync_view_filters_unreadable_total"
            : "Stored or announced view filters that could not be read, taken as no filter";
        counter VIEWS_NOT_KEPT = "rtsync_views_not_kept_total"
            : "View filters read from Redis but not kept because the registry was full";
        counter VIEW_API_FAILURES = "rtsync_view_api_failures_total"
            : "PUT or GET of a view's filter (HTTP API) refused or failed";
        counter RATE_LIMITED = "rtsync_rate_limited_total"
            : "Requests refused by the rate limit";
        counter FRAMES_REJECTED = "rtsync_frames_rejected_total" ["reason" => FrameRejected]
            : "Client frames refused, by reason";
        gauge TABLES_TAILED = "rtsync_tables_tailed"
            : "Table streams this sidecar reads";
        counter ENTRIES_SKIPPED = "rtsync_stream_entries_skipped_total"
            : "Malformed stream entries skipped";
        counter RING_ENTRIES = "rtsync_ring_entries_delivered_total"
            : "Stream entries delivered from their doorbell, without a stream read";
        counter REDIS_ERRORS = "rtsync_redis_errors_total" ["kind" => RedisErrorKind]
            : "Redis command failures by kind";
        counter REDIS_RECONNECTS = "rtsync_redis_reconnects_total"
            : "Stream reader reconnections to Redis";
        counter AUTH_FAILURES = "rtsync_auth_failures_total" ["reason" => AuthFailure]
            : "Authentication failures by reason";
        gauge CONSUMER_GROUP_LAG = "rtsync_consumer_group_lag_entries"
            : "Largest consumer-group lag of the tables this sidecar reads, in entries";
        gauge PRESENCE_USERS = "rtsync_presence_users"
            : "Users present on the tables this sidecar serves";
        gauge REDIS_UP = "rtsync_redis_up"
            : "1 while Redis answers, else 0";
        counter CONNECTIONS_REFUSED = "rtsync_connections_refused_total" ["reason" => ConnectionRefused]
            : "Connections refused by a limit, by reason";
        counter WRITER_ERRORS = "rtsync_writer_errors_total" ["kind" => WriterError]
            : "Connections closed because a write failed or timed out, by kind";
        counter PRESENCE_NOTICES_DROPPED = "rtsync_presence_notices_dropped_total"
            : "Presence notices dropped because the relay queue was full";
        histogram REDIS_PIPELINE_SIZE = "rtsync_redis_pipeline_size" buckets SIZE
            : "Function calls sent together in one pipeline (group commit)";
        counter RELAYS_DEFERRED = "rtsync_presence_relays_deferred_total"
            : "Cursor/selection updates held back by the per-user relay rate";
        histogram DURABLE_WAIT = "rtsync_durable_wait_seconds" in Seconds buckets LATENCY
            : "Round trip of a pipeline of commits with its RTS_DURABLE_WRITES wait (WAIT/WAITAOF)";
        counter DURABLE_UNCONFIRMED = "rtsync_durable_unconfirmed_total"
            : "Pipelines of commits whose durability was not confirmed in time (answered timeout)";
        counter REDIS_FAILOVERS = "rtsync_redis_failovers_total"
            : "Times the Redis primary changed and the connections moved to the new one (Sentinel)";
        counter AUDIT_WRITTEN = "rtsync_audit_written_total"
            : "Audit entries appended to the audit stream";
        counter AUDIT_DROPPED = "rtsync_audit_dropped_total" ["reason" => AuditDropped]
            : "Audit records not written, by reason (rate limit per source, full queue, write failed)";
        counter AUDIT_WRITE_FAILURES = "rtsync_audit_write_failures_total"
            : "Failed appends to the audit stream (each retried, then dropped)";
        counter RELAYS_SKIPPED_VIEWPORT = "rtsync_presence_relays_skipped_viewport_total"
            : "Cursor/editing relays not sent to a connection whose viewport does not hold the record";
        counter EDITING_EXPIRED = "rtsync_presence_editing_expired_total"
            : "Editing indicators that ended because they were not renewed in RTS_EDITING_TTL_MS";
        counter EDITING_EXPIRY_FAILURES = "rtsync_presence_editing_expiry_failures_total"
            : "Editing expiry checks that failed in Redis (the sweeper ends the indicator later)";
        counter FILTER_EVALUATIONS = "rtsync_filter_evaluations_total"
            : "Row-grant and view filters evaluated on a record (load_records pages, fan-out)";
        counter ROWS_WITHHELD = "rtsync_rows_withheld_total"
            : "Records left out of a reply because they are outside the reader's row grant";
        counter ROW_GRANT_REFUSED = "rtsync_row_grant_refused_total"
            : "Requests refused because their path does not apply row grants yet";
        counter FILTER_STATE_READ_FAILURES = "rtsync_filter_state_read_failures_total"
            : "Reads of record states for filtered subscribers' fan-out that failed (those records were withheld from filtered subscribers)";
        counter VIEW_MOVES = "rtsync_view_moves_total"
            : "record_entered_view / record_left_view decisions of the live fan-out, per cohort";
        gauge FILTER_COHORTS = "rtsync_filter_cohorts"
            : "Cohorts of filtered subscribers (equal filter, bound user, mask, view) on this sidecar's tables";
    }
}

declare! {
    /// The sink's metrics (`rtsync sink`), registered by `register_sink`.
    SINK,
    /// Every name `rtsync sink` exports (docs/protocol.md section 9).
    SINK_ALL {
        gauge SINK_LAG_ENTRIES = "rtsync_sink_lag_entries"
            : "Entries of the owned tables not yet acknowledged by the sink";
        gauge SINK_LAG_SECONDS = "rtsync_sink_lag_seconds" in Seconds
            : "Age of the oldest entry of the owned tables not yet acknowledged";
        counter SINK_DELIVERIES = "rtsync_sink_deliveries_total" ["outcome" => SinkOutcome]
            : "POSTs of the sink, by how they ended";
        counter SINK_DEAD_LETTERED = "rtsync_sink_dead_lettered_total"
            : "Batches the receiver refused for good, moved to the dead letters";
        histogram SINK_REQUEST_DURATION = "rtsync_sink_request_duration_seconds" in Seconds buckets LATENCY
            : "Round trip of one POST of the sink";
        counter SINK_EVENTS = "rtsync_sink_events_delivered_total"
            : "Events the receiver acknowledged";
        counter SINK_LOST = "rtsync_sink_entries_lost_total"
            : "Entries trimmed from a stream before the sink acknowledged them";
        gauge SINK_TABLES = "rtsync_sink_tables_owned"
            : "Tables whose delivery this sink owns";
    }
}
