//! The catalog is the contract with grafana/ and the docs: these tests pin
//! it. That a label value emitted is a declared one needs no test: the
//! helpers take label enums and the catalog declares every variant.

use std::collections::BTreeSet;

use super::catalog::{Declared, Metric, SIDECAR, SINK};
use super::labels::{EventIn, Label};
use super::{catalog, ALL, SINK_ALL};
use crate::protocol::messages::ClientEvent;
use crate::protocol::ServerEvent;

fn declared(name: &str) -> &'static Declared {
    SIDECAR
        .iter()
        .chain(SINK)
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("{name} is declared"))
}

/// Every variant of `L` is a declared label value of `metric`, under the
/// key the metric declares.
fn assert_variants_declared<K, L: Label>(metric: &Metric<K, L>) {
    let declared = declared(metric.name);
    let set = declared
        .label
        .expect("a labelled metric declares its label");
    let values = (set.values)();
    for variant in L::variants() {
        assert!(
            values.contains(&variant.value()),
            "{}{{{}=\"{}\"}} is declared",
            metric.name,
            set.key,
            variant.value()
        );
    }
}

#[test]
fn every_variant_of_every_label_enum_is_a_declared_label_of_its_metric() {
    assert_variants_declared(&catalog::CONNECTIONS);
    assert_variants_declared(&catalog::MESSAGES_IN);
    assert_variants_declared(&catalog::MESSAGES_OUT);
    assert_variants_declared(&catalog::COMMITS);
    assert_variants_declared(&catalog::FANOUT_FRAMES_BUILT);
    assert_variants_declared(&catalog::FRAMES_REJECTED);
    assert_variants_declared(&catalog::REDIS_ERRORS);
    assert_variants_declared(&catalog::AUTH_FAILURES);
    assert_variants_declared(&catalog::CONNECTIONS_REFUSED);
    assert_variants_declared(&catalog::WRITER_ERRORS);
    assert_variants_declared(&catalog::SINK_DELIVERIES);
}

#[test]
fn label_values_of_a_metric_are_distinct() {
    for metric in SIDECAR.iter().chain(SINK) {
        let Some(set) = metric.label else { continue };
        let values = (set.values)();
        let distinct: BTreeSet<_> = values.iter().collect();
        assert_eq!(distinct.len(), values.len(), "{}", metric.name);
    }
}

#[test]
fn every_metric_name_is_declared_once() {
    let names: Vec<_> = ALL.iter().chain(SINK_ALL).collect();
    let distinct: BTreeSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), names.len());
}

#[test]
fn the_name_lists_are_the_declared_families() {
    let sidecar: Vec<_> = SIDECAR.iter().map(|d| d.name).collect();
    let sink: Vec<_> = SINK.iter().map(|d| d.name).collect();
    assert_eq!(sidecar, ALL);
    assert_eq!(sink, SINK_ALL);
}

#[test]
fn every_histogram_has_its_buckets_and_only_histograms_have_buckets() {
    for metric in SIDECAR.iter().chain(SINK) {
        let histogram = metric.kind == catalog::Kind::Histogram;
        assert_eq!(metric.buckets.is_some(), histogram, "{}", metric.name);
    }
}

/// A label key and its values.
type Labelled = (&'static str, &'static [&'static str]);

/// Every (name, label key and values) exported, as Grafana and the docs
/// know them: a rename here is a breaking change for dashboards. The
/// `event` labels are the client's and the server's event names (filled in
/// by the test).
const EXPORTED: &[(&str, Option<Labelled>)] = &[
    (
        "rtsync_connections",
        Some(("state", &["open", "authenticated"])),
    ),
    ("rtsync_messages_in_total", Some(("event", &[]))),
    ("rtsync_messages_out_total", Some(("event", &[]))),
    ("rtsync_bytes_in_total", None),
    ("rtsync_bytes_out_total", None),
    ("rtsync_commit_duration_seconds", None),
    (
        "rtsync_commits_total",
        Some((
            "status",
            &[
                "applied",
                "merged",
                "overwritten",
                "rejected",
                "duplicate",
                "error",
            ],
        )),
    ),
    (
        "rtsync_undo_total",
        Some((
            "status",
            &[
                "applied",
                "partial",
                "conflict",
                "nothing",
                "duplicate",
                "busy",
                "error",
            ],
        )),
    ),
    ("rtsync_fanout_latency_seconds", None),
    ("rtsync_events_delivered_total", None),
    (
        "rtsync_fanout_frames_built_total",
        Some(("audience", &["full", "masked"])),
    ),
    ("rtsync_delivery_batch_size", None),
    ("rtsync_slow_consumer_disconnects_total", None),
    ("rtsync_frames_compressed_total", None),
    ("rtsync_frames_not_shrunk_total", None),
    ("rtsync_compression_bytes_saved_total", None),
    ("rtsync_http_bodies_compressed_total", None),
    ("rtsync_http_compression_bytes_saved_total", None),
    ("rtsync_http_bodies_refused_total", None),
    ("rtsync_view_events_applied_total", None),
    ("rtsync_view_filters_unreadable_total", None),
    ("rtsync_views_not_kept_total", None),
    ("rtsync_view_api_failures_total", None),
    ("rtsync_rate_limited_total", None),
    (
        "rtsync_frames_rejected_total",
        Some((
            "reason",
            &[
                "too_large",
                "decode",
                "invalid",
                "protocol",
                "attachments",
                "timeout",
            ],
        )),
    ),
    ("rtsync_tables_tailed", None),
    ("rtsync_stream_entries_skipped_total", None),
    ("rtsync_ring_entries_delivered_total", None),
    (
        "rtsync_redis_errors_total",
        Some(("kind", &["unavailable", "timeout", "other"])),
    ),
    ("rtsync_redis_reconnects_total", None),
    (
        "rtsync_auth_failures_total",
        Some((
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
        )),
    ),
    ("rtsync_consumer_group_lag_entries", None),
    ("rtsync_presence_users", None),
    ("rtsync_redis_up", None),
    (
        "rtsync_connections_refused_total",
        Some((
            "reason",
            &["sidecar_full", "per_user", "unauthenticated_evicted"],
        )),
    ),
    (
        "rtsync_writer_errors_total",
        Some(("kind", &["timeout", "failed"])),
    ),
    ("rtsync_presence_notices_dropped_total", None),
    ("rtsync_redis_pipeline_size", None),
    ("rtsync_presence_relays_deferred_total", None),
    ("rtsync_durable_wait_seconds", None),
    ("rtsync_durable_unconfirmed_total", None),
    ("rtsync_redis_failovers_total", None),
    ("rtsync_audit_written_total", None),
    (
        "rtsync_audit_dropped_total",
        Some(("reason", &["rate_limited", "queue_full", "write_failed"])),
    ),
    ("rtsync_audit_write_failures_total", None),
    ("rtsync_presence_relays_skipped_viewport_total", None),
    ("rtsync_presence_editing_expired_total", None),
    ("rtsync_presence_editing_expiry_failures_total", None),
    ("rtsync_filter_evaluations_total", None),
    ("rtsync_rows_withheld_total", None),
    ("rtsync_row_grant_refused_total", None),
    ("rtsync_filter_state_read_failures_total", None),
    ("rtsync_view_moves_total", None),
    ("rtsync_filter_cohorts", None),
    ("rtsync_sink_lag_entries", None),
    ("rtsync_sink_lag_seconds", None),
    (
        "rtsync_sink_deliveries_total",
        Some(("outcome", &["delivered", "retried", "dead_lettered"])),
    ),
    ("rtsync_sink_dead_lettered_total", None),
    ("rtsync_sink_request_duration_seconds", None),
    ("rtsync_sink_events_delivered_total", None),
    ("rtsync_sink_entries_lost_total", None),
    ("rtsync_sink_tables_owned", None),
];

#[test]
fn exported_series_are_the_ones_dashboards_know() {
    let events_in: Vec<_> = ClientEvent::ALL
        .iter()
        .map(|e| e.name())
        .chain(["unknown", "invalid"])
        .collect();
    let events_out: Vec<_> = ServerEvent::ALL.iter().map(|e| e.name()).collect();
    let expected: Vec<_> = EXPORTED
        .iter()
        .map(|(name, label)| {
            let label = label.map(|(key, values)| match *name {
                "rtsync_messages_in_total" => (key, events_in.clone()),
                "rtsync_messages_out_total" => (key, events_out.clone()),
                _ => (key, values.to_vec()),
            });
            (*name, label)
        })
        .collect();
    let actual: Vec<_> = SIDECAR
        .iter()
        .chain(SINK)
        .map(|d| (d.name, d.label.map(|set| (set.key, (set.values)()))))
        .collect();
    assert_eq!(actual, expected);
}

#[test]
fn an_event_in_is_labelled_by_its_wire_name() {
    let event = EventIn::Client(ClientEvent::RecordChange);
    assert_eq!(event.value(), "record_change");
    assert_eq!(EventIn::Unknown.value(), "unknown");
    assert_eq!(EventIn::Invalid.value(), "invalid");
}
