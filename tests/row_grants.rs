//! Row-level grants (docs/protocol.md 2.2): a table grant's `rows` filter
//! decides which records a user sees and writes. `load_records` holds only
//! those records; `record_change` writes only records that match before
//! and after the change; live subscriptions get only the user's rows, with
//! `record_entered_view` / `record_left_view` when others move a record in
//! or out; undo and offline changes refuse a user who has one, writing
//! nothing. Two sidecars, both encodings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod support;

use serde_json::{json, Value};
use support::client::{Client, Enc};
use support::sio::Sio;
use support::tables::{all_pages, ids, two_sidecars, xlen};
use support::tokens::now_secs;
use support::{RedisServer, Sidecar};

/// Every record not owned by the intern carries this in its `note`, so a
/// test can look for it in raw frames.
const OTHERS: &str = "NOT-YOURS-5521";

fn own_rows() -> Value {
    json!({"access": "rw", "rows": {"field": "owner", "op": "eq", "value": "$user"}})
}

async fn intern(side: &Sidecar, user: &str, enc: Enc) -> Client {
    let claims = json!({"sub": user, "exp": now_secs() + 3600, "tables": {"*": own_rows()}});
    Client::connect_claims(side, &claims, enc).await
}

fn create(table: &str, record: &str, owner: &str, note: &str) -> Value {
    json!({"type": "create", "recordId": record, "tableId": table, "baseId": "b1",
        "changes": [{"fieldId": "owner", "newValue": owner}, {"fieldId": "note", "newValue": note}]})
}

/// Ten records: r0, r2, r4... owned by `ann`, the others by `bob`.
async fn seed_records(writer: &mut Client, table: &str) {
    for i in 0..10 {
        let (owner, note) = if i % 2 == 0 {
            ("ann", "mine")
        } else {
            ("bob", OTHERS)
        };
        writer
            .request_ok(
                "record_change",
                create(table, &format!("r{i}"), owner, note),
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn load_records_pages_only_the_records_of_the_users_rows() {
    let (_redis, a, b) = two_sidecars("rg-load").await;
    let t = "rg-load";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    for (side, enc) in [(&a, Enc::MsgPack), (&b, Enc::Json)] {
        let mut ann = intern(side, "ann", enc).await;
        for limit in [1, 2, 3, 500] {
            let seen = all_pages(&mut ann, json!({"tableId": t}), limit).await;
            assert_eq!(seen, ["r0", "r2", "r4", "r6", "r8"], "limit {limit}");
        }
        assert!(
            !ann.received_bytes(OTHERS.as_bytes()),
            "ann received a row of bob"
        );
        assert!(
            !ann.received_bytes(b"r1"),
            "a page cursor named a hidden record"
        );
    }
    let all = all_pages(&mut writer, json!({"tableId": t}), 500).await;
    assert_eq!(
        all.len(),
        10,
        "a user without a row grant sees every record"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn load_records_by_ids_leaves_out_the_records_outside_the_rows() {
    let (_redis, a, _b) = two_sidecars("rg-ids").await;
    let t = "rg-ids";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    let mut ann = intern(&a, "ann", Enc::MsgPack).await;
    let page = ann
        .request_ok(
            "load_records",
            json!({"tableId": t, "recordIds": ["r1", "r2", "r3"]}),
        )
        .await;
    assert_eq!(ids(&page), ["r2"]);
    assert_eq!(page["records"][0]["fields"]["owner"], "ann");
    assert!(!ann.received_bytes(OTHERS.as_bytes()));
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_and_offline_changes_under_a_row_grant_are_refused_and_write_nothing() {
    let (redis, a, b) = two_sidecars("rg-refuse").await;
    let t = "rg-refuse";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    let before = xlen(&redis, t).await;
    for (side, enc) in [(&a, Enc::MsgPack), (&b, Enc::Json)] {
        let mut ann = intern(side, "ann", enc).await;
        let e = ann
            .request("undo", json!({"tableId": t}))
            .await
            .unwrap_err();
        assert_eq!(e["code"], "forbidden", "{e}");
        assert!(e["message"].as_str().unwrap().contains("row grant"), "{e}");
        let offline = json!([{"type": "update", "entityId": "r0", "tableId": t, "baseId": "b1",
            "changes": [{"fieldId": "note", "newValue": "x"}], "clientChangeId": "o1"}]);
        let ack = ann.request_ok("sync_offline_changes", offline).await;
        assert_eq!(ack["rejected"], 1, "{ack}");
        assert!(!ann.received_bytes(OTHERS.as_bytes()));
    }
    assert_eq!(xlen(&redis, t).await, before, "nothing was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_row_grant_refuses_the_token_naming_the_part() {
    let (_redis, a, _b) = two_sidecars("rg-bad").await;
    let claims = json!({"sub": "ann", "exp": now_secs() + 3600,
        "tables": {"t": {"access": "r", "rows": {"field": "owner", "op": "like", "value": 1}}}});
    let mut c = Client::open(&a, None, &[], "").await;
    let token = support::tokens::hs256(&claims);
    let e = c
        .request("authenticate", json!({"token": token}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "unauthenticated", "{e}");
    assert_eq!(c.closed().await, Some(4401));
}

fn update(table: &str, record: &str, field: &str, value: Value) -> Value {
    json!({"type": "update", "recordId": record, "tableId": table, "baseId": "b1",
        "changes": [{"fieldId": field, "newValue": value}]})
}

/// Asserts `change` is `forbidden` with `needle` in its message and left
/// the stream as it was.
async fn assert_refused(c: &mut Client, redis: &RedisServer, t: &str, change: Value, needle: &str) {
    let before = xlen(redis, t).await;
    let e = c
        .request("record_change", change.clone())
        .await
        .unwrap_err();
    assert_eq!(e["code"], "forbidden", "{change}: {e}");
    assert!(
        e["message"].as_str().unwrap().contains(needle),
        "{change}: {e}"
    );
    assert_eq!(xlen(redis, t).await, before, "{change} wrote nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_inside_the_rows_commit() {
    let (_redis, a, b) = two_sidecars("rg-write-in").await;
    let t = "rg-write-in";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    let mut ann = intern(&b, "ann", Enc::Json).await;
    let created = ann
        .request_ok("record_change", create(t, "r20", "ann", "new"))
        .await;
    assert_eq!(created["status"], "applied");
    let edited = ann
        .request_ok("record_change", update(t, "r2", "note", json!("edited")))
        .await;
    assert_eq!(edited["status"], "applied");
    let deleted = ann
        .request_ok(
            "record_change",
            json!({"type": "delete", "recordId": "r4", "tableId": t, "baseId": "b1"}),
        )
        .await;
    assert_eq!(deleted["status"], "applied");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_outside_the_rows_or_leaving_them_are_forbidden_and_write_nothing() {
    let (redis, a, b) = two_sidecars("rg-write-out").await;
    let t = "rg-write-out";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    for (side, enc) in [(&a, Enc::MsgPack), (&b, Enc::Json)] {
        let mut ann = intern(side, "ann", enc).await;
        let cases = [
            (update(t, "r1", "note", json!("x")), "outside your rows"),
            (update(t, "r1", "owner", json!("ann")), "outside your rows"),
            (
                json!({"type": "delete", "recordId": "r3", "tableId": t, "baseId": "b1"}),
                "outside your rows",
            ),
            (
                update(t, "r2", "owner", json!("bob")),
                "would leave record r2",
            ),
            (
                update(t, "r2", "owner", Value::Null),
                "would leave record r2",
            ),
            (create(t, "r30", "bob", "x"), "would leave record r30"),
            (create(t, "r1", "ann", "x"), "outside your rows"),
        ];
        for (change, needle) in cases {
            assert_refused(&mut ann, &redis, t, change, needle).await;
        }
        assert!(
            !ann.received_bytes(OTHERS.as_bytes()),
            "a refusal carried a row of bob"
        );
    }
    let page = writer
        .request_ok(
            "load_records",
            json!({"tableId": t, "recordIds": ["r2", "r30"]}),
        )
        .await;
    assert_eq!(ids(&page), ["r2"]);
    assert_eq!(page["records"][0]["fields"]["owner"], "ann");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_racing_a_move_out_of_the_rows_is_checked_against_the_new_state() {
    let (redis, a, b) = two_sidecars("rg-race").await;
    let t = "rg-race";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    let mut ann = intern(&b, "ann", Enc::MsgPack).await;
    // Many edits by ann while hr moves r6 to bob: once moved, every write
    // of ann to r6 is forbidden, and none lands after the move.
    let mover = tokio::spawn(async move {
        writer
            .request_ok("record_change", update(t, "r6", "owner", json!("bob")))
            .await;
        writer
    });
    let mut refused = false;
    for i in 0..40 {
        match ann
            .request("record_change", update(t, "r6", "note", json!(i)))
            .await
        {
            Ok(r) => assert!(!refused, "a write landed after a refusal: {r}"),
            Err(e) => {
                assert_eq!(e["code"], "forbidden", "{e}");
                refused = true;
            }
        }
    }
    let mut writer = mover.await.unwrap();
    assert!(refused, "the move happened during the edits");
    let history = writer
        .request_ok(
            "record_history",
            json!({"tableId": t, "recordId": "r6", "limit": 100}),
        )
        .await;
    let events = history["events"].as_array().unwrap();
    let owner_change = events
        .iter()
        .position(|e| e["changes"][0]["fieldId"] == "owner" && e["changes"][0]["newValue"] == "bob")
        .unwrap();
    assert_eq!(
        owner_change, 0,
        "nothing of ann's was written after the move"
    );
    let _ = redis;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_whose_required_version_moved_writes_nothing_and_is_not_remembered() {
    let (redis, a, _b) = two_sidecars("rg-moved").await;
    let t = "rg-moved";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    let keys =
        rtsync::store::keys::Keys::new("rts").commit_keys(t, "record", "r0", Some(("u", "cc1")));
    let call = |version: u64| {
        let header = format!(
            r#"{{"type":"update","entityType":"record","entityId":"r0","userId":"u","clientChangeId":"cc1","recordHistory":100,"requireVersion":{version}}}"#
        );
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("rtsync_commit")
            .arg(keys.len())
            .arg(&keys)
            .arg(header)
            .arg(r#"[{"fieldId":"note","newValue":"y"}]"#)
            .arg("")
            .arg("86400000");
        cmd
    };
    let before = xlen(&redis, t).await;
    let moved: String = call(7).query_async(&mut redis.conn().await).await.unwrap();
    let moved: Value = serde_json::from_str(&moved).unwrap();
    assert_eq!(
        moved,
        json!({"status": "rejected", "version": 1, "reason": "moved"})
    );
    assert_eq!(xlen(&redis, t).await, before);
    let applied: String = call(1).query_async(&mut redis.conn().await).await.unwrap();
    assert!(
        applied.contains(r#""status":"applied""#),
        "{applied}: the moved answer was not kept for cc1"
    );
    assert_eq!(xlen(&redis, t).await, before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn record_history_shows_only_records_inside_the_rows() {
    let (_redis, a, b) = two_sidecars("rg-history").await;
    let t = "rg-history";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    writer
        .request_ok("record_change", update(t, "r1", "note", json!(OTHERS)))
        .await;
    let mut ann = intern(&b, "ann", Enc::MsgPack).await;
    let hidden = ann
        .request_ok("record_history", json!({"tableId": t, "recordId": "r1"}))
        .await;
    assert_eq!(hidden, json!({"events": []}), "as if r1 did not exist");
    let own = ann
        .request_ok("record_history", json!({"tableId": t, "recordId": "r2"}))
        .await;
    assert_eq!(own["events"].as_array().unwrap().len(), 1);
    assert!(!ann.received_bytes(OTHERS.as_bytes()));
}

#[tokio::test(flavor = "multi_thread")]
async fn over_socketio_reads_and_writes_keep_to_the_rows() {
    let (redis, a, b) = two_sidecars("rg-sio").await;
    let t = "rg-sio";
    let mut writer = Client::connect(&a, "hr").await;
    seed_records(&mut writer, t).await;
    let claims = json!({"sub": "ann", "exp": now_secs() + 3600, "tables": {"*": own_rows()}});
    let token = support::tokens::hs256(&claims);
    let mut sio = Sio::connect(&b, &json!({ "token": token })).await;
    let page = sio
        .request(1, "load_records", &json!({"tableId": t}))
        .await
        .expect("an ack");
    assert_eq!(ids(&page), ["r0", "r2", "r4", "r6", "r8"]);
    assert!(!page.to_string().contains(OTHERS));
    let before = xlen(&redis, t).await;
    let refused = sio
        .request(2, "record_change", &update(t, "r1", "note", json!("x")))
        .await
        .expect("an ack");
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    assert_eq!(xlen(&redis, t).await, before);
    let applied = sio
        .request(3, "record_change", &update(t, "r2", "note", json!("y")))
        .await
        .expect("an ack");
    assert_eq!(applied["status"], "applied", "{applied}");
}

/// The next frame named one of `names`, within the support's wait.
async fn next_of(c: &mut Client, names: &[&str]) -> (String, Value) {
    let (name, data, _) = c
        .take(|(e, _, _)| names.contains(&e.as_str()))
        .await
        .unwrap_or_else(|| panic!("none of {names:?} arrived"));
    (name, data)
}

#[tokio::test(flavor = "multi_thread")]
async fn live_changes_reach_an_intern_only_for_records_of_their_rows_on_both_sidecars() {
    let (_redis, a, b) = two_sidecars("rg-live").await;
    let t = "rg-live";
    let mut hr = Client::subscribed(&a, "hr", t).await;
    seed_records(&mut hr, t).await;
    let mut interns = Vec::new();
    for (side, enc) in [(&a, Enc::MsgPack), (&b, Enc::Json)] {
        let mut ann = intern(side, "ann", enc).await;
        ann.request_ok(
            "subscribe_to_table",
            json!({"tableId": t, "viewId": "grid"}),
        )
        .await;
        interns.push(ann);
    }
    for i in 0..10 {
        let note = if i % 2 == 0 {
            "mine-2".to_owned()
        } else {
            format!("{OTHERS}-2")
        };
        hr.request_ok(
            "record_change",
            update(t, &format!("r{i}"), "note", json!(note)),
        )
        .await;
    }
    for ann in &mut interns {
        let got = ann.changes(5, std::time::Duration::from_secs(5)).await;
        let ids: Vec<&str> = got
            .iter()
            .map(|e| e["entityId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["r0", "r2", "r4", "r6", "r8"]);
        // One more event in the stream after them: had anything of the
        // others' records been sent, it would have arrived by now.
        hr.request_ok("record_change", update(t, "r0", "note", json!("last")))
            .await;
        let last = ann.changes(1, std::time::Duration::from_secs(5)).await;
        assert_eq!(last[0]["entityId"], "r0");
        assert!(
            !ann.received_bytes(OTHERS.as_bytes()),
            "a byte of another's record"
        );
        assert!(!ann.received_bytes(b"r1\""), "not even another's record id");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_given_to_the_intern_enters_with_its_masked_state_and_leaves_when_taken_away() {
    let (_redis, a, b) = two_sidecars("rg-move").await;
    let t = "rg-move";
    let mut hr = Client::connect(&a, "hr").await;
    seed_records(&mut hr, t).await;
    hr.request_ok("record_change", update(t, "r1", "salary", json!(91234)))
        .await;
    let grant = json!({"access": "rw", "rows": {"field": "owner", "op": "eq", "value": "$user"},
        "fields": {"salary": "none"}});
    let claims = json!({"sub": "ann", "exp": now_secs() + 3600, "tables": {"*": grant}});
    let mut ann = Client::connect_claims(&b, &claims, Enc::Json).await;
    ann.request_ok(
        "subscribe_to_table",
        json!({"tableId": t, "viewId": "grid"}),
    )
    .await;
    let given = hr
        .request_ok("record_change", update(t, "r1", "owner", json!("ann")))
        .await;
    let (name, entered) = next_of(&mut ann, &["record_entered_view", "record_left_view"]).await;
    assert_eq!(name, "record_entered_view");
    assert_eq!(entered["tableId"], t);
    assert_eq!(entered["viewId"], Value::Null, "only the row grant filters");
    assert_eq!(entered["eventId"], given["eventId"]);
    let record = &entered["record"];
    assert_eq!(record["recordId"], "r1");
    assert_eq!(record["version"], given["version"]);
    assert_eq!(record["deleted"], false);
    assert_eq!(
        record["fields"],
        json!({"owner": "ann", "note": OTHERS}),
        "salary masked"
    );
    assert!(!ann.received_bytes(b"91234"));
    let taken = hr
        .request_ok("record_change", update(t, "r1", "owner", json!("bob")))
        .await;
    let (name, left) = next_of(&mut ann, &["record_entered_view", "record_left_view"]).await;
    assert_eq!(name, "record_left_view");
    assert_eq!(
        left,
        json!({"tableId": t, "viewId": null, "recordId": "r1", "eventId": taken["eventId"]})
    );
    hr.request_ok(
        "record_change",
        update(t, "r1", "note", json!("after-leave")),
    )
    .await;
    hr.request_ok("record_change", update(t, "r0", "note", json!("sentinel")))
        .await;
    let last = ann.changes(1, std::time::Duration::from_secs(5)).await;
    assert_eq!(last[0]["entityId"], "r0", "nothing of r1 once it left");
    assert!(!ann.received_bytes(b"after-leave"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filtered_subscriber_gets_no_recent_changes_and_recovers_by_reloading() {
    let (_redis, a, b) = two_sidecars("rg-recover").await;
    let t = "rg-recover";
    let mut hr = Client::connect(&a, "hr").await;
    seed_records(&mut hr, t).await;
    let mut ann = intern(&b, "ann", Enc::Json).await;
    let ack = ann
        .request_ok(
            "subscribe_to_table",
            json!({"tableId": t, "viewId": "grid", "lastEventId": "0-0"}),
        )
        .await;
    assert_eq!(ack["resyncRequired"], "filtered", "{ack}");
    let resync = ann.expect_event("resync_required").await;
    assert_eq!(resync["reason"], "filtered");
    let recovered = ann
        .request(
            "recover_connection",
            json!({"tableId": t, "lastEventId": "0-0"}),
        )
        .await;
    assert!(recovered.is_ok(), "{recovered:?}");
    let mut fresh = intern(&a, "ann", Enc::MsgPack).await;
    fresh
        .request_ok(
            "subscribe_to_table",
            json!({"tableId": t, "viewId": "grid"}),
        )
        .await;
    assert!(!ann.received_bytes(OTHERS.as_bytes()));
    assert!(!fresh.received_bytes(OTHERS.as_bytes()));
    assert!(
        !fresh.received_bytes(b"mine"),
        "no recent_changes under a filter"
    );
}

/// A subscriber's copy of the table, kept by the version rule: record id
/// → (version, fields).
#[derive(Default, Debug, PartialEq)]
struct Copy(std::collections::BTreeMap<String, (u64, Value)>);

impl Copy {
    fn apply(&mut self, name: &str, data: &Value) {
        match name {
            "record_change" => self.change(data),
            "batch_changes" => data.as_array().unwrap().iter().for_each(|e| self.change(e)),
            "record_entered_view" => self.state(&data["record"]),
            "record_left_view" => {
                self.0.remove(data["recordId"].as_str().unwrap());
            }
            _ => {}
        }
    }

    fn state(&mut self, r: &Value) {
        let (id, v) = (
            r["recordId"].as_str().unwrap(),
            r["version"].as_u64().unwrap(),
        );
        if self.0.get(id).is_none_or(|held| v > held.0) {
            self.0.insert(id.to_owned(), (v, r["fields"].clone()));
        }
    }

    fn change(&mut self, e: &Value) {
        let (id, v) = (
            e["entityId"].as_str().unwrap(),
            e["version"].as_u64().unwrap(),
        );
        let Some(held) = self.0.get_mut(id) else {
            panic!("a change of {id}, a record this subscriber does not hold: {e}");
        };
        if v <= held.0 {
            return;
        }
        if e["type"] == "delete" {
            self.0.remove(id);
            return;
        }
        held.0 = v;
        for c in e["changes"].as_array().unwrap() {
            let f = c["fieldId"].as_str().unwrap();
            match &c["newValue"] {
                Value::Null => held.1.as_object_mut().unwrap().remove(f),
                nv => held
                    .1
                    .as_object_mut()
                    .unwrap()
                    .insert(f.to_owned(), nv.clone()),
            };
        }
    }

    async fn loaded(c: &mut Client, table: &str) -> Copy {
        let page = c
            .request_ok("load_records", json!({"tableId": table, "limit": 1000}))
            .await;
        let mut copy = Copy::default();
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .for_each(|r| copy.state(r));
        copy
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn four_writers_moving_records_in_and_out_leave_every_subscriber_equal_to_its_load_records() {
    let (_redis, a, b) = two_sidecars("rg-conv").await;
    let t = "rg-conv";
    let mut hr = Client::connect(&a, "hr").await;
    seed_records(&mut hr, t).await;
    let users = ["ann", "bob", "cy"];
    let mut subs = Vec::new();
    for (n, user) in users.iter().chain(["ann"].iter()).enumerate() {
        let (side, enc) = if n.is_multiple_of(2) {
            (&a, Enc::MsgPack)
        } else {
            (&b, Enc::Json)
        };
        let mut c = intern(side, user, enc).await;
        c.request_ok(
            "subscribe_to_table",
            json!({"tableId": t, "viewId": "grid"}),
        )
        .await;
        let copy = Copy::loaded(&mut c, t).await;
        subs.push((user.to_owned(), c, copy));
    }
    let writer = |w: u64| {
        let side = if w.is_multiple_of(2) { &a } else { &b };
        async move {
            let mut c = Client::connect(side, &format!("hr{w}")).await;
            let mut seed = 7919 * (w + 1);
            for n in 0..40 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let record = format!("r{}", (seed >> 33) % 10);
                let change = match (seed >> 20) % 3 {
                    0 => update(t, &record, "note", json!(format!("w{w}-{n}"))),
                    _ => update(
                        t,
                        &record,
                        "owner",
                        json!(users[((seed >> 40) % 3) as usize]),
                    ),
                };
                c.request_ok("record_change", change).await;
            }
        }
    };
    futures_util::future::join_all((0..4).map(writer)).await;
    for user in users {
        hr.request_ok(
            "record_change",
            create(t, &format!("s-{user}"), user, "sentinel"),
        )
        .await;
    }
    for (user, c, copy) in &mut subs {
        let sentinel = format!("s-{user}");
        loop {
            let (name, data, _) = c
                .next(std::time::Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("{user}: no sentinel"));
            copy.apply(&name, &data);
            if name == "record_entered_view" && data["record"]["recordId"] == sentinel.as_str() {
                break;
            }
        }
        let expected = Copy::loaded(c, t).await;
        assert_eq!(*copy, expected, "{user}'s copy against its load_records");
        assert!(expected.0.values().all(|(_, f)| f["owner"] == **user));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_socketio_live_events_keep_to_the_rows_and_a_given_record_enters() {
    let (_redis, a, b) = two_sidecars("rg-sio-live").await;
    let t = "rg-sio-live";
    let mut hr = Client::connect(&a, "hr").await;
    seed_records(&mut hr, t).await;
    let claims = json!({"sub": "ann", "exp": now_secs() + 3600, "tables": {"*": own_rows()}});
    let token = support::tokens::hs256(&claims);
    let mut sio = Sio::connect(&b, &json!({ "token": token })).await;
    let ack = sio
        .request(
            1,
            "subscribe_to_table",
            &json!({"tableId": t, "viewId": "grid"}),
        )
        .await
        .expect("an ack");
    assert_eq!(ack["tableId"], t, "{ack}");
    for i in 0..10 {
        let note = format!("HIDDEN-{i}");
        hr.request_ok(
            "record_change",
            update(t, &format!("r{i}"), "note", json!(note)),
        )
        .await;
    }
    hr.request_ok("record_change", update(t, "r1", "owner", json!("ann")))
        .await;
    let (mut raw, mut entered) = (String::new(), None);
    while entered.is_none() {
        let text = sio
            .text(std::time::Duration::from_secs(10))
            .await
            .expect("the entered record");
        raw.push_str(&text);
        let Some(body) = text.strip_prefix("42") else {
            continue;
        };
        let frame: Value = serde_json::from_str(body).unwrap();
        if frame[0] == "record_entered_view" {
            entered = Some(frame[1].clone());
        }
    }
    let entered = entered.unwrap();
    assert_eq!(entered["record"]["recordId"], "r1");
    assert_eq!(entered["record"]["fields"]["note"], "HIDDEN-1");
    for i in [0, 2, 4, 6, 8] {
        assert!(raw.contains(&format!("HIDDEN-{i}")), "own record r{i}");
    }
    for i in [3, 5, 7, 9] {
        assert!(
            !raw.contains(&format!("HIDDEN-{i}")),
            "another's record r{i}"
        );
    }
}
