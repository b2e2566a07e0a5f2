//! The rules a change obeys exist twice: in Rust (`rtsync::change`, checked
//! before anything is sent) and in `lua/commit.lua` (checked by the function
//! other services call directly). One table of inputs goes through both,
//! and each input must be refused by both or by neither.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use rtsync::change::{ChangeLimits, ChangeRequest};
use rtsync::store::keys::Keys;
use serde_json::{json, Map, Value};
use support::RedisServer;

/// Limits far above every input, so only the rules decide.
const LIMITS: ChangeLimits = ChangeLimits {
    max_changes: 1000,
    max_event_bytes: 1 << 24,
    max_record_bytes: 1 << 24,
    answer_bytes: 1 << 20,
};

/// Ids on both sides of every id rule.
fn ids() -> Vec<String> {
    let mut out: Vec<String> = [
        "t1",
        "tâble-ünïcode",
        "a\u{2010}b",
        "",
        "a{b",
        "a}b",
        "a\nb",
        "a\u{7f}b",
        "a\u{85}b",
        "a\u{ad}b",
        "a\u{200b}b",
        "a\u{202e}b",
        "a\u{2066}b",
        "a\u{feff}b",
        "a\u{110bd}b",
        "a\u{e0041}b",
        "a b",
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    out.push("x".repeat(128));
    out.push("x".repeat(129));
    out.push("é".repeat(64)); // 128 bytes
    out.push(format!("{}é", "x".repeat(127))); // 129 bytes
    out
}

fn base_change() -> Map<String, Value> {
    json!({"type": "update", "entityType": "record", "entityId": "r1", "userId": "u1",
           "tableId": "t1"})
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// One input: the change's header fields, its `changes` and `metadata`.
struct Case {
    what: String,
    header: Map<String, Value>,
    changes: Option<Value>,
    metadata: Option<Value>,
}

fn case(what: impl Into<String>, edit: impl FnOnce(&mut Map<String, Value>)) -> Case {
    let mut header = base_change();
    edit(&mut header);
    Case {
        what: what.into(),
        header,
        changes: Some(json!([{"fieldId": "f1", "newValue": 1}])),
        metadata: None,
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for id in ids() {
        for field in ["entityId", "userId", "tableId", "baseId"] {
            let v = id.clone();
            out.push(case(format!("{field}={id:?}"), |h| {
                h.insert(field.into(), json!(v));
            }));
        }
        let mut c = case(format!("fieldId={id:?}"), |_| {});
        c.changes = Some(json!([{"fieldId": id, "newValue": 1}]));
        out.push(c);
        let base = id.clone();
        out.push(case(format!("base change baseId={id:?}"), |h| {
            h.insert("entityType".into(), json!("base"));
            h.insert("type".into(), json!("rename"));
            h.insert("baseId".into(), json!(base));
            h.remove("tableId");
        }));
    }
    for (entity, kind) in [
        ("record", "create"),
        ("record", "update"),
        ("record", "delete"),
        ("record", "upsert"),
        ("record", ""),
        ("field", "rename"),
        ("field", ""),
        ("view", "x".repeat(32).as_str()),
        ("view", "x".repeat(33).as_str()),
        ("table", "create"),
        ("row", "create"),
        ("", "create"),
    ] {
        let kind = kind.to_owned();
        out.push(case(format!("{entity}/{kind}"), |h| {
            h.insert("entityType".into(), json!(entity));
            h.insert("type".into(), json!(kind));
        }));
    }
    for version in [0u64, 1, (1 << 53) - 1, 1 << 53, u64::MAX] {
        out.push(case(format!("version {version}"), |h| {
            h.insert("version".into(), json!(version));
        }));
    }
    for len in [0usize, 1, 128, 129] {
        out.push(case(format!("clientChangeId of {len} bytes"), |h| {
            h.insert("clientChangeId".into(), json!("c".repeat(len)));
        }));
    }
    for (what, changes) in [
        ("changes null", Value::Null),
        ("changes []", json!([])),
        ("changes {}", json!({})),
        ("changes an object", json!({"fieldId": "f1"})),
        ("changes of a number", json!([1])),
        ("changes without fieldId", json!([{"newValue": 1}])),
        ("changes of a numeric fieldId", json!([{"fieldId": 5}])),
    ] {
        let mut c = case(what, |_| {});
        c.changes = Some(changes);
        out.push(c);
    }
    for (what, metadata) in [
        ("metadata {}", json!({})),
        ("metadata object", json!({"onConflict": "reject"})),
        ("metadata []", json!([])),
        ("metadata [1]", json!([1])),
        ("metadata string", json!("x")),
    ] {
        let mut c = case(what, |_| {});
        c.metadata = Some(metadata);
        out.push(c);
    }
    out
}

/// Whether Rust's validation accepts the change.
fn rust_accepts(c: &Case) -> bool {
    let mut v = Value::Object(c.header.clone());
    if let Some(ch) = &c.changes {
        v["changes"] = ch.clone();
    }
    if let Some(m) = &c.metadata {
        v["metadata"] = m.clone();
    }
    match serde_json::from_value::<ChangeRequest>(v) {
        Ok(req) => req.validate(LIMITS).is_ok(),
        // A shape serde refuses (a version past u64, ...) is refused.
        Err(_) => false,
    }
}

/// Whether `rtsync_commit` accepts it: anything but an `RTSYNC_INVALID`
/// error (a rejection for a version conflict is an answer, not a refusal).
async fn lua_accepts(conn: &mut rtsync::store::Conn, keys: &Keys, c: &Case) -> bool {
    let text = |k: &str| c.header.get(k).and_then(Value::as_str).unwrap_or("");
    let entity_type = text("entityType");
    let scope = if entity_type == "base" {
        text("baseId")
    } else {
        text("tableId")
    };
    let stream = if entity_type == "base" {
        keys.base_events(scope)
    } else {
        keys.events(scope)
    };
    let state = if entity_type == "record" {
        keys.record(scope, text("entityId"))
    } else {
        keys.versions(scope)
    };
    let json_or_empty = |v: &Option<Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(v) => v.to_string(),
    };
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("rtsync_commit");
    match c.header.get("clientChangeId").and_then(Value::as_str) {
        Some(cc) => cmd
            .arg(3)
            .arg(stream)
            .arg(state)
            .arg(keys.dedup(scope, text("userId"), cc)),
        None => cmd.arg(2).arg(stream).arg(state),
    };
    cmd.arg(Value::Object(c.header.clone()).to_string())
        .arg(json_or_empty(&c.changes))
        .arg(json_or_empty(&c.metadata))
        .arg(86_400_000);
    let reply: Result<String, redis::RedisError> = cmd.query_async(conn).await;
    match reply {
        Ok(_) => true,
        Err(e) if e.code() == Some("RTSYNC_INVALID") => false,
        Err(e) => panic!("{}: unexpected error {e}", c.what),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_and_lua_refuse_the_same_changes() {
    // One standalone server: the rules do not depend on the topology, and
    // ids with braces would cross slots on a cluster.
    let redis = RedisServer::start_with(false).await;
    let mut conn = redis.conn().await;
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(rtsync::store::LIBRARY_KEY_CHECK)
        .query_async(&mut conn)
        .await
        .expect("FUNCTION LOAD");
    let keys = Keys::new("rts");
    let cases = cases();
    let mut disagree = Vec::new();
    let mut refused = 0;
    for c in &cases {
        let rust = rust_accepts(c);
        let lua = lua_accepts(&mut conn, &keys, c).await;
        if rust != lua {
            disagree.push(format!("{}: Rust {rust}, Lua {lua}", c.what));
        }
        refused += usize::from(!rust);
    }
    assert!(disagree.is_empty(), "{disagree:#?}");
    // The table holds both kinds of input.
    assert!(refused > 40 && refused < cases.len() - 20, "{refused}");
}
