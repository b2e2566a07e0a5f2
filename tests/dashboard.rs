//! The Grafana dashboard only queries metrics the sidecar exports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/rtsync.json");
    let text = std::fs::read_to_string(path).expect("grafana/rtsync.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("rtsync_") {
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    queried.insert(base.to_owned());
                }
            }
        }
    }
    assert!(!queried.is_empty());
    let unknown: Vec<_> = queried
        .iter()
        .filter(|m| {
            !rtsync::metrics::ALL.contains(&m.as_str())
                && !rtsync::metrics::SINK_ALL.contains(&m.as_str())
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "dashboard queries unknown metrics: {unknown:?}"
    );
    // The sink's row covers every metric the sink exports.
    for name in rtsync::metrics::SINK_ALL {
        assert!(queried.contains(*name), "the sink row shows {name}");
    }
}
