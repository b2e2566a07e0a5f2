//! After `install()` (and, in the sink, `register_sink()`), `/metrics`
//! shows every declared series at zero: each (name, label value) of the
//! catalog, before anything happened. A label value emitted but not
//! declared cannot exist: the helpers take label enums and the catalog
//! declares each enum's every variant (see `rtsync::metrics::labels`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rtsync::metrics::catalog::{Declared, Kind, SIDECAR, SINK};

/// The line prefix of a series in Prometheus text: histograms show their
/// `_count` series.
fn series_prefix(metric: &Declared, label: Option<(&str, &str)>) -> String {
    let name = match metric.kind {
        Kind::Histogram => format!("{}_count", metric.name),
        Kind::Counter | Kind::Gauge => metric.name.to_owned(),
    };
    match label {
        Some((key, value)) => format!("{name}{{{key}=\"{value}\"}} "),
        None => format!("{name} "),
    }
}

#[test]
fn every_declared_series_is_exported_at_zero_from_the_start() {
    let handle = rtsync::metrics::install();
    rtsync::metrics::register_sink();
    let text = handle.render();
    for metric in SIDECAR.iter().chain(SINK) {
        for label in metric.series() {
            let prefix = series_prefix(metric, label);
            assert!(
                text.lines().any(|l| l == format!("{prefix}0")),
                "{prefix}0 is exported from the start"
            );
        }
        assert!(
            text.contains(&format!("# HELP {} {}", metric.name, metric.help)),
            "{} is described",
            metric.name
        );
    }
}
