use serde_json::{json, Value};

use super::*;
use crate::change::StreamId;

fn view_event(view: &str, version: u64, filter: Option<Value>) -> ChangeEvent {
    let mut change = json!({"fieldId": "filter"});
    if let Some(f) = filter {
        change["newValue"] = f;
    }
    let fields: Vec<(String, Vec<u8>)> = [
        ("type", FILTER_EVENT.to_owned()),
        ("entityType", "view".to_owned()),
        ("entityId", view.to_owned()),
        ("userId", "api".to_owned()),
        ("version", version.to_string()),
        ("changes", json!([change]).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_bytes()))
    .collect();
    let id = StreamId::parse(&format!("{version}-0")).unwrap();
    ChangeEvent::from_stream_entry(id, &fields, "t").unwrap()
}

fn mine() -> Value {
    json!({"field": "owner", "op": "eq", "value": "$user"})
}

#[test]
fn a_view_event_of_a_served_table_sets_its_filter() {
    let views = Views::new();
    views.serving("t", true);
    views.apply("t", &[view_event("v", 1, Some(mine()))]);
    let f = views.filter("t", "v").unwrap();
    assert_eq!(f.to_json(), mine());
}

#[test]
fn a_view_event_without_a_new_value_makes_the_view_the_whole_table() {
    let views = Views::new();
    views.serving("t", true);
    views.apply("t", &[view_event("v", 1, Some(mine()))]);
    views.apply("t", &[view_event("v", 2, None)]);
    assert!(views.filter("t", "v").is_none());
}

#[test]
fn an_older_view_event_changes_nothing() {
    let views = Views::new();
    views.serving("t", true);
    views.apply("t", &[view_event("v", 2, Some(mine()))]);
    views.apply("t", &[view_event("v", 1, None)]);
    assert!(views.filter("t", "v").is_some());
}

#[test]
fn events_of_a_table_not_served_are_not_kept() {
    let views = Views::new();
    views.apply("t", &[view_event("v", 1, Some(mine()))]);
    assert!(views.filter("t", "v").is_none());
}

#[test]
fn stopping_to_serve_a_table_forgets_its_views() {
    let views = Views::new();
    views.serving("t", true);
    views.apply("t", &[view_event("v", 1, Some(mine()))]);
    views.serving("t", false);
    views.serving("t", true);
    assert!(views.filter("t", "v").is_none());
}

#[test]
fn an_unreadable_filter_in_an_event_is_taken_as_no_filter() {
    let views = Views::new();
    views.serving("t", true);
    views.apply("t", &[view_event("v", 1, Some(mine()))]);
    views.apply(
        "t",
        &[view_event(
            "v",
            2,
            Some(json!({"field": "a", "op": "like"})),
        )],
    );
    assert!(views.filter("t", "v").is_none());
}

#[test]
fn other_events_of_a_view_change_no_filter() {
    let views = Views::new();
    views.serving("t", true);
    let mut e = view_event("v", 1, Some(mine()));
    e.kind = "update".into();
    views.apply("t", &[e]);
    assert!(views.filter("t", "v").is_none());
}

/// Records, per delivery, the events handed on and the filter of view
/// `v` at that moment.
struct Recorder {
    views: Arc<Views>,
    seen: Mutex<Vec<(Vec<String>, bool)>>,
}

impl crate::store::events::EventHandler for Recorder {
    fn deliver(&self, table: &str, events: Vec<ChangeEvent>) {
        let kinds = events.iter().map(|e| e.entity_type.clone()).collect();
        let filtered = self.views.filter(table, "v").is_some();
        crate::locks::lock(&self.seen).push((kinds, filtered));
    }
    fn notify(&self, _: &str, _: crate::store::events::Notice) {}
    fn cursor(&self, _: &str) -> Option<StreamId> {
        None
    }
}

fn record_event(version: u64) -> ChangeEvent {
    let fields: Vec<(String, Vec<u8>)> = [
        ("type", "update"),
        ("entityType", "record"),
        ("entityId", "r1"),
        ("userId", "u"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
    .collect();
    let id = StreamId::parse(&format!("{version}-1")).unwrap();
    ChangeEvent::from_stream_entry(id, &fields, "t").unwrap()
}

#[test]
fn events_after_a_view_event_are_handed_on_under_its_filter_and_those_before_it_are_not() {
    use crate::store::events::EventHandler;
    let views = Arc::new(Views::new());
    views.serving("t", true);
    let recorder = Arc::new(Recorder {
        views: views.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let tailed = follow::ViewEvents::new(recorder.clone(), views);
    tailed.deliver(
        "t",
        vec![
            record_event(1),
            record_event(2),
            view_event("v", 1, Some(mine())),
            record_event(3),
        ],
    );
    let seen = crate::locks::lock(&recorder.seen).clone();
    assert_eq!(
        seen,
        [
            (vec!["record".to_owned(), "record".to_owned()], false),
            (vec!["view".to_owned(), "record".to_owned()], true),
        ]
    );
}

#[test]
fn a_view_never_set_is_not_kept_when_read() {
    let views = Views::new();
    views.serving("t", true);
    let generation = crate::locks::lock(&views.inner).served.get("t").copied();
    for n in 0..3 {
        let got = views.keep_read("t", &format!("junk{n}"), generation, None, 0);
        assert!(got.is_none(), "the whole table");
    }
    assert_eq!(crate::locks::lock(&views.inner).count, 0, "nothing kept");
    let f = Filter::parse(&mine(), "filter").map(Arc::new).ok();
    assert!(views.keep_read("t", "v", generation, f, 1).is_some());
    assert_eq!(
        crate::locks::lock(&views.inner).count,
        1,
        "a set view is kept"
    );
}
