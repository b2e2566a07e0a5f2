//! Function calls made at once share pipelines (group commit); each call
//! still gets its own answer: the right event id for its change, and an
//! error reply of one call fails no other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use support::RedisServer;

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_each_get_their_own_answer_and_an_error_fails_no_other() {
    let redis = RedisServer::start().await;
    let store = support::store(&redis, "group-test").await;
    let store = Arc::new(store);
    let calls: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut cmd = redis::cmd("FCALL");
                cmd.arg("rtsync_commit")
                    .arg(2)
                    .arg("rts:{g}:events")
                    .arg(format!("rts:{{g}}:rec:r{i}"));
                if i % 3 == 0 {
                    cmd.arg("not json");
                } else {
                    let change = json!({"type": "create", "entityType": "record",
                        "entityId": format!("r{i}"), "userId": "u"});
                    cmd.arg(change.to_string());
                }
                cmd.arg("[]").arg("");
                (i, store.fcall::<String>(&cmd).await)
            })
        })
        .collect();
    let mut event_of = HashMap::new();
    for call in calls {
        let (i, answer) = call.await.expect("task");
        if i % 3 == 0 {
            let e = answer.expect_err("a bad change is refused");
            assert!(
                e.to_string().contains("change must be a JSON object"),
                "{e}"
            );
        } else {
            let r: Value = serde_json::from_str(&answer.expect("a good change commits"))
                .expect("a CommitResult");
            assert_eq!(r["status"], "applied");
            event_of.insert(
                r["eventId"].as_str().expect("eventId").to_owned(),
                format!("r{i}"),
            );
        }
    }
    assert_eq!(event_of.len(), 200);
    // Each answer's event id is the entry of that call's own change.
    let entries: redis::Value = redis::cmd("XRANGE")
        .arg("rts:{g}:events")
        .arg("-")
        .arg("+")
        .query_async(&mut redis.conn().await)
        .await
        .expect("XRANGE");
    let entries = rtsync::store::tailer::entries(entries);
    assert_eq!(entries.len(), 200);
    for (id, fields) in entries {
        let entity = fields
            .iter()
            .find(|(k, _)| k == "entityId")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        assert_eq!(entity.as_ref(), event_of.get(&id.to_string()), "entry {id}");
    }
}
