//! Helpers shared by the tests of row grants and views: two sidecars on one
//! Redis, a table's stream length, and every record id `load_records`
//! pages through (the request's own fields, `viewId` say, kept on each
//! page).

use serde_json::{json, Value};

use super::{Client, RedisServer, Sidecar};

pub async fn two_sidecars(prefix: &str) -> (RedisServer, Sidecar, Sidecar) {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, &format!("{prefix}-a"), &[]).await;
    let b = Sidecar::start(&redis, &format!("{prefix}-b"), &[]).await;
    (redis, a, b)
}

pub async fn xlen(redis: &RedisServer, table: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(format!("rts:{{{table}}}:events"))
        .query_async(&mut redis.conn().await)
        .await
        .unwrap()
}

/// The record ids of one `load_records` page.
pub fn ids(page: &Value) -> Vec<String> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recordId"].as_str().unwrap().to_owned())
        .collect()
}

/// Pages through `load_records` (`request` plus `limit` and `after`),
/// returning every id seen.
pub async fn all_pages(c: &mut Client, request: Value, limit: u64) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..50 {
        let mut req = request.clone();
        req["limit"] = json!(limit);
        if let Some(a) = &after {
            req["after"] = json!(a);
        }
        let page = c.request_ok("load_records", req).await;
        seen.extend(ids(&page));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return seen,
        }
    }
    panic!("load_records never ended");
}
