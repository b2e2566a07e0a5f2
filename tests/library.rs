//! The function library as Redis loads it: both assemblies load, the key
//! check refuses a key a call did not declare, and each function's
//! compatibility form (its first documented key list) answers and writes
//! exactly as its full form does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::BTreeMap;

use redis::AsyncCommands;
use rtsync::store::keys::Keys;
use rtsync::store::{Conn, LIBRARY, LIBRARY_KEY_CHECK};
use support::RedisServer;

async fn load(conn: &mut Conn, library: &str) -> redis::RedisResult<String> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library)
        .query_async(conn)
        .await
}

async fn server_with_library() -> (RedisServer, Conn) {
    // One standalone server: the comparisons below list every key.
    let redis = RedisServer::start_with(false).await;
    let mut conn = redis.conn().await;
    load(&mut conn, LIBRARY_KEY_CHECK).await.expect("load");
    (redis, conn)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_library_loads_with_and_without_the_key_check() {
    let redis = RedisServer::start_with(false).await;
    let mut conn = redis.conn().await;
    for library in [LIBRARY, LIBRARY_KEY_CHECK] {
        assert_eq!(load(&mut conn, library).await.unwrap(), "rtsync");
        let listed: redis::Value = redis::cmd("FUNCTION")
            .arg("LIST")
            .arg("LIBRARYNAME")
            .arg("rtsync")
            .query_async(&mut conn)
            .await
            .unwrap();
        let text = format!("{listed:?}");
        for f in [
            "rtsync_commit",
            "rtsync_load",
            "rtsync_seed",
            "rtsync_history",
        ] {
            assert!(text.contains(f), "{f} missing from {text}");
        }
    }
}

/// A library `probe` of base, the key check and one function that reads
/// the key named by its first argument.
fn probe_library() -> String {
    let base =
        include_str!("../lua/rtsync.lua").replacen("#!lua name=rtsync", "#!lua name=probe", 1);
    format!(
        "{base}{}\ndefine('probe', {{ 'base' }}, function(m)\n  \
         m.base.register('probe_get', function(keys, args) return m.base.call('GET', args[1]) end)\n\
         end)\n",
        include_str!("../lua/keycheck.lua")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_check_refuses_a_key_the_call_did_not_declare() {
    let redis = RedisServer::start_with(false).await;
    let mut conn = redis.conn().await;
    assert_eq!(load(&mut conn, &probe_library()).await.unwrap(), "probe");
    let declared: Option<String> = redis::cmd("FCALL")
        .arg("probe_get")
        .arg(1)
        .arg("k1")
        .arg("k1")
        .query_async(&mut conn)
        .await
        .expect("a declared key is read");
    assert_eq!(declared, None);
    let err = redis::cmd("FCALL")
        .arg("probe_get")
        .arg(1)
        .arg("k1")
        .arg("k2")
        .query_async::<Option<String>>(&mut conn)
        .await
        .expect_err("an undeclared key is refused");
    assert_eq!(err.code(), Some("RTSYNC_KEYCHECK"), "{err}");
    assert!(
        err.to_string().contains("probe_get: key k2 not in KEYS"),
        "{err}"
    );
}

/// Every key and its content, stream ids and times replaced by `<id>` so
/// two runs of the same calls compare equal.
async fn snapshot(conn: &mut Conn) -> BTreeMap<String, String> {
    let keys: Vec<String> = conn.keys("*").await.unwrap();
    let mut out = BTreeMap::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        let value: redis::Value = match kind.as_str() {
            "string" => conn.get(&key).await.unwrap(),
            "hash" => conn.hgetall(&key).await.unwrap(),
            "zset" => conn.zrange(&key, 0, -1).await.unwrap(),
            "list" => conn.lrange(&key, 0, -1).await.unwrap(),
            "stream" => redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query_async(conn)
                .await
                .unwrap(),
            other => panic!("unexpected {other} at {key}"),
        };
        out.insert(key, without_ids(&format!("{kind} {value:?}")));
    }
    out
}

fn without_ids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let digits = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        let after = &tail[digits..];
        let seq = after
            .strip_prefix('-')
            .and_then(|s| s.find(|c: char| !c.is_ascii_digit()).or(Some(s.len())))
            .filter(|n| *n > 0 && digits >= 12);
        match seq {
            Some(n) => {
                out.push_str("<id>");
                rest = &after[1 + n..];
            }
            None => {
                out.push_str(&tail[..digits]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One call: the function, its KEYS and ARGV.
struct Call {
    function: &'static str,
    keys: Vec<String>,
    args: Vec<String>,
}

async fn run(conn: &mut Conn, calls: &[Call]) -> Vec<String> {
    let mut answers = Vec::new();
    for c in calls {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(c.function)
            .arg(c.keys.len())
            .arg(&c.keys)
            .arg(&c.args);
        let answer: redis::RedisResult<String> = cmd.query_async(conn).await;
        answers.push(without_ids(&format!("{answer:?}")));
    }
    answers
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// The commits, seeds and loads of the comparison, with the keys of
/// `full` (the sidecar's lists) or of the compatibility forms.
#[allow(clippy::too_many_lines)] // a table of calls, one per line
fn calls(full: bool) -> Vec<Call> {
    let k = Keys::new("rts");
    let commit = |entity_type: &str, id: &str, cc: Option<&str>, header: &str, changes: &str| {
        let scope = if entity_type == "base" { "b" } else { "t" };
        let keys = if full {
            k.commit_keys(scope, entity_type, id, cc.map(|c| ("u", c)))
        } else {
            let mut v = k.commit_keys(scope, entity_type, id, cc.map(|c| ("u", c)));
            let dedup = cc.and(v.pop());
            v.truncate(2);
            v.extend(dedup);
            v
        };
        // The sidecar's form of a record change names its history index
        // and says so in the header (`recordHistory`, v1.3).
        let header = match header.strip_suffix('}') {
            Some(open) if full && entity_type == "record" => {
                format!("{open},\"recordHistory\":100}}")
            }
            _ => header.to_owned(),
        };
        Call {
            function: "rtsync_commit",
            keys,
            args: strings(&[&header, changes, "", "86400000"]),
        }
    };
    let records = |ids: &[&str]| {
        let owned: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let keys = k.load_keys("t", &owned);
        if full {
            keys
        } else {
            keys[..2].to_vec()
        }
    };
    vec![
        commit(
            "record",
            "r1",
            Some("c1"),
            r#"{"type":"create","entityType":"record","entityId":"r1","userId":"u","clientChangeId":"c1"}"#,
            r#"[{"fieldId":"f","newValue":1}]"#,
        ),
        commit(
            "record",
            "r1",
            Some("c1"),
            r#"{"type":"create","entityType":"record","entityId":"r1","userId":"u","clientChangeId":"c1"}"#,
            r#"[{"fieldId":"f","newValue":1}]"#,
        ),
        commit(
            "record",
            "r1",
            None,
            r#"{"type":"update","entityType":"record","entityId":"r1","userId":"u","version":1}"#,
            r#"[{"fieldId":"f","newValue":2}]"#,
        ),
        commit(
            "record",
            "r1",
            Some("c2"),
            r#"{"type":"update","entityType":"record","entityId":"r1","userId":"u","version":1,"clientChangeId":"c2"}"#,
            r#"[{"fieldId":"f","newValue":3}]"#,
        ),
        commit(
            "record",
            "r2",
            None,
            r#"{"type":"delete","entityType":"record","entityId":"r2","userId":"u"}"#,
            "",
        ),
        commit(
            "field",
            "f1",
            None,
            r#"{"type":"create","entityType":"field","entityId":"f1","userId":"u","version":0}"#,
            "",
        ),
        commit(
            "base",
            "b",
            Some("c3"),
            r#"{"type":"update","entityType":"base","entityId":"b","userId":"u","clientChangeId":"c3"}"#,
            "",
        ),
        Call {
            function: "rtsync_seed",
            keys: records(&["s1", "r1"]),
            args: strings(&["s1", "2", "0", "1", "f", "\"x\"", "r1", "1", "0", "0"]),
        },
        Call {
            function: "rtsync_load",
            keys: records(&["r1", "r2", "s1"]),
            args: strings(&["bytes", "100000", "page", "", "10"]),
        },
        Call {
            function: "rtsync_load",
            keys: records(&["s1", "zz", "s1"]),
            args: strings(&["hide", "1", "g", "ids", "s1", "zz", "s1"]),
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compatibility_forms_answer_and_write_as_the_full_forms_do() {
    let (_old_redis, mut old) = server_with_library().await;
    let (_new_redis, mut new) = server_with_library().await;
    for conn in [&mut old, &mut new] {
        // A sink floor the commits' trimming must read.
        let _: () = conn.set("rts:{t}:sink-floor", "1").await.unwrap();
    }
    let old_answers = run(&mut old, &calls(false)).await;
    let new_answers = run(&mut new, &calls(true)).await;
    assert_eq!(old_answers, new_answers);
    assert!(
        old_answers.iter().all(|a| a.starts_with("Ok(")),
        "{old_answers:#?}"
    );
    assert_eq!(snapshot(&mut old).await, snapshot(&mut new).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_whose_index_changed_since_its_ids_were_read_asks_to_be_read_again() {
    let (_redis, mut conn) = server_with_library().await;
    let k = Keys::new("rts");
    let _: () = conn.zadd("rts:{t}:records", "b", 0).await.unwrap();
    // The keys name "b" as the page's first record; the index now lists
    // "a" first.
    let _: () = conn.zadd("rts:{t}:records", "a", 0).await.unwrap();
    let answer: String = redis::cmd("FCALL")
        .arg("rtsync_load")
        .arg(3)
        .arg(k.load_keys("t", &["b".to_string()]))
        .arg("page")
        .arg("")
        .arg(10)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(answer, r#"{"retry":true}"#);
}
