//! Editing indicators and viewport presence (docs/protocol.md section 3.4):
//! `editing` relayed as `user_editing` across sidecars on both endpoints,
//! ended by stop, expiry, disconnect and unsubscribe, kept in
//! `table_users` for late joiners, masked like cursors, throttled per user;
//! `viewport` relayed and kept, and `relay: "viewport"` filtering cursor
//! and editing relays.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::client::{Client, Enc};
use support::sio::Sio;
use support::tokens::{now_secs, token};
use support::{metric, wait_for, RedisServer, Sidecar};

const WAIT: Duration = Duration::from_secs(10);

struct Two {
    redis: RedisServer,
    a: Sidecar,
    b: Sidecar,
}

async fn two(env: &[(&str, &str)]) -> Two {
    let redis = RedisServer::start().await;
    let a = Sidecar::start(&redis, "ea", env).await;
    let b = Sidecar::start(&redis, "eb", env).await;
    Two { redis, a, b }
}

fn editing(record: &str, field: &str, state: &str) -> Value {
    json!({"tableId": "t", "recordId": record, "fieldId": field, "state": state})
}

/// The next `user_editing` of `user` in `state` within `within`.
async fn editing_of(c: &mut Client, user: &str, state: &str, within: Duration) -> Option<Value> {
    c.take_within(within, |(e, d, _)| {
        e == "user_editing" && d["userId"] == user && d["state"] == state
    })
    .await
    .map(|(_, d, _)| d)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_editing_start_reaches_the_other_sidecar_with_the_users_color() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::connect(&t.b, "bob").await;
    let ack = bob
        .request_ok("subscribe_to_table", json!({"tableId": "t"}))
        .await;
    bob.request_ok("editing", editing("r1", "status", "start"))
        .await;
    let seen = editing_of(&mut alice, "bob", "start", WAIT)
        .await
        .expect("user_editing");
    assert_eq!(
        seen,
        json!({"userId": "bob", "color": ack["color"], "tableId": "t",
            "recordId": "r1", "fieldId": "status", "state": "start"})
    );
    assert!(
        editing_of(&mut bob, "bob", "start", Duration::from_millis(300))
            .await
            .is_none(),
        "not sent back to its sender"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_editing_stop_is_relayed_and_clears_the_indicator() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    bob.request_ok("editing", editing("r1", "f", "start")).await;
    editing_of(&mut alice, "bob", "start", WAIT).await.unwrap();
    bob.request_ok("editing", editing("r1", "f", "stop")).await;
    let stop = editing_of(&mut alice, "bob", "stop", WAIT).await.unwrap();
    assert_eq!(
        (stop["recordId"].clone(), stop["fieldId"].clone()),
        (json!("r1"), json!("f"))
    );
    let mut late = Client::subscribed(&t.a, "carol", "t").await;
    let users = late.expect_event("table_users").await;
    let bob_user = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == "bob");
    assert!(bob_user.unwrap().get("editing").is_none(), "{users}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_editing_indicator_not_renewed_expires_with_a_stop() {
    let t = two(&[("RTS_EDITING_TTL_MS", "400")]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    bob.request_ok("editing", editing("r1", "f", "start")).await;
    editing_of(&mut alice, "bob", "start", WAIT).await.unwrap();
    let began = std::time::Instant::now();
    let stop = editing_of(&mut alice, "bob", "stop", WAIT)
        .await
        .expect("a stop on expiry");
    let after = began.elapsed();
    assert_eq!(stop["recordId"], "r1");
    assert!(after < Duration::from_secs(3), "expired after {after:?}");
    // Counted once the expiring call returned, which may be after the stop
    // it published reached alice.
    wait_for("the expiry counted", WAIT, || async {
        let (_, text) = t.b.get("/metrics");
        (metric(&text, "rtsync_presence_editing_expired_total") >= 1.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_editing_indicator_does_not_expire() {
    let t = two(&[("RTS_EDITING_TTL_MS", "600")]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    for _ in 0..8 {
        bob.request_ok("editing", editing("r1", "f", "start")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    editing_of(&mut alice, "bob", "start", WAIT).await.unwrap();
    assert!(
        editing_of(&mut alice, "bob", "stop", Duration::from_millis(100))
            .await
            .is_none(),
        "renewed every 200 ms with a 600 ms TTL"
    );
    assert!(
        editing_of(&mut alice, "bob", "stop", Duration::from_secs(3))
            .await
            .is_some(),
        "then it expires"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disconnect_ends_the_users_editing() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    bob.request_ok("editing", editing("r2", "f", "start")).await;
    editing_of(&mut alice, "bob", "start", WAIT).await.unwrap();
    bob.close().await;
    let stop = editing_of(&mut alice, "bob", "stop", WAIT).await.unwrap();
    assert_eq!(stop["recordId"], "r2");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsubscribe_ends_the_users_editing() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    bob.request_ok("editing", editing("r3", "f", "start")).await;
    editing_of(&mut alice, "bob", "start", WAIT).await.unwrap();
    bob.request_ok("unsubscribe_from_table", json!({"tableId": "t"}))
        .await;
    editing_of(&mut alice, "bob", "stop", WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_joiner_sees_current_editors_in_table_users() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    bob.request_ok("editing", editing("r7", "name", "start"))
        .await;
    editing_of(&mut alice, "bob", "start", WAIT).await.unwrap();
    let mut carol = Client::subscribed(&t.a, "carol", "t").await;
    let users = carol.expect_event("table_users").await;
    let bob_user = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == "bob")
        .cloned()
        .unwrap();
    assert_eq!(
        bob_user["editing"],
        json!({"recordId": "r7", "fieldId": "name"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_a_hidden_field_is_never_relayed_to_those_who_cannot_read_it() {
    let t = two(&[]).await;
    let intern = json!({"sub": "intern", "exp": now_secs() + 3600,
        "tables": {"*": {"access": "rw", "fields": {"salary": "none"}}}});
    let mut c = Client::connect_claims(&t.b, &intern, Enc::Json).await;
    c.request_ok("subscribe_to_table", json!({"tableId": "t"}))
        .await;
    let mut watcher = Client::subscribed(&t.b, "watcher", "t").await;
    let mut hr = Client::subscribed(&t.a, "hr", "t").await;
    hr.request_ok("editing", editing("r1", "salary", "start"))
        .await;
    editing_of(&mut watcher, "hr", "start", WAIT).await.unwrap();
    // A later start on a readable field reaches the intern first.
    tokio::time::sleep(Duration::from_millis(60)).await;
    hr.request_ok("editing", editing("r1", "name", "start"))
        .await;
    let first = c
        .take(|(e, _, _)| e == "user_editing")
        .await
        .expect("the readable one")
        .1;
    assert_eq!(first["fieldId"], "name");
    tokio::time::sleep(Duration::from_millis(60)).await;
    hr.request_ok("editing", editing("r1", "salary", "start"))
        .await;
    watcher
        .take(|(e, d, _)| e == "user_editing" && d["fieldId"] == "salary")
        .await
        .expect("hr2 sees the second start on salary");
    let mut late = Client::connect_claims(&t.b, &intern, Enc::Json).await;
    late.request_ok("subscribe_to_table", json!({"tableId": "t"}))
        .await;
    let users = late.expect_event("table_users").await;
    let hr_user = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == "hr");
    assert!(hr_user.unwrap().get("editing").is_none(), "{users}");
    for who in [&mut c, &mut late] {
        let hidden = who
            .take_within(Duration::from_millis(300), |(e, d, _)| {
                e == "user_editing" && d["fieldId"] == "salary"
            })
            .await;
        assert!(hidden.is_none(), "{hidden:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_starts_a_second_relay_at_most_twenty() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut spam = Client::subscribed(&t.b, "spam", "t").await;
    let began = std::time::Instant::now();
    for n in 0..100 {
        let rid = spam
            .send_request("editing", editing(&format!("r{n}"), "f", "start"))
            .await;
        let _ = rid;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let window = began.elapsed();
    let mut relayed = 0u32;
    let mut last = Value::Null;
    while let Some(d) = editing_of(&mut alice, "spam", "start", Duration::from_millis(400)).await {
        relayed += 1;
        last = d;
    }
    let per_second = f64::from(relayed) / window.as_secs_f64();
    eprintln!("100 starts in {window:?}; relayed {relayed} ({per_second:.1}/s)");
    assert!(relayed >= 5, "starts still flow ({relayed})");
    assert!(per_second <= 22.0, "{per_second:.1} relays/s");
    assert_eq!(last["recordId"], "r99", "the latest wins");
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_works_through_socket_io_both_ways() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut sio = Sio::connect(&t.b, &json!({"token": token("sio")})).await;
    let ack = sio
        .request(1, "subscribe_to_table", &json!({"tableId": "t"}))
        .await
        .unwrap();
    assert_eq!(ack["tableId"], "t", "{ack}");
    sio.request(2, "editing", &editing("r1", "f", "start"))
        .await
        .unwrap();
    editing_of(&mut alice, "sio", "start", WAIT).await.unwrap();
    alice
        .request_ok("editing", editing("r2", "g", "start"))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut found = None;
    while found.is_none() && tokio::time::Instant::now() < deadline {
        found = sio
            .events(Duration::from_millis(200))
            .await
            .into_iter()
            .find(|(e, d)| e == "user_editing" && d["userId"] == "alice");
    }
    let (_, d) = found.expect("user_editing over Socket.IO");
    assert_eq!(
        (d["recordId"].clone(), d["state"].clone()),
        (json!("r2"), json!("start"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewport_is_relayed_and_kept_for_late_joiners() {
    let t = two(&[]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    let viewport = json!({"tableId": "t", "viewId": "grid", "firstRecordId": "r10",
        "lastRecordId": "r19"});
    bob.request_ok("viewport", viewport).await;
    let seen = alice
        .take(|(e, d, _)| e == "user_viewport" && d["userId"] == "bob")
        .await
        .expect("user_viewport")
        .1;
    let expected = json!({"viewId": "grid", "firstRecordId": "r10", "lastRecordId": "r19"});
    assert_eq!(seen["viewport"], expected);
    let mut carol = Client::subscribed(&t.a, "carol", "t").await;
    let users = carol.expect_event("table_users").await;
    let bob_user = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == "bob");
    assert_eq!(bob_user.unwrap()["viewport"], expected);
}

/// Subscribes `user` with `relay: "viewport"` and a viewport of r10..r19.
async fn viewport_watcher(side: &Sidecar, user: &str) -> Client {
    let mut c = Client::connect(side, user).await;
    c.request_ok(
        "subscribe_to_table",
        json!({"tableId": "t", "relay": "viewport"}),
    )
    .await;
    c.request_ok(
        "viewport",
        json!({"tableId": "t", "firstRecordId": "r10", "lastRecordId": "r19"}),
    )
    .await;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_viewport_skips_cursors_and_editing_outside_the_viewport() {
    let t = two(&[]).await;
    let mut near = viewport_watcher(&t.a, "near").await;
    let mut all = Client::subscribed(&t.a, "all", "t").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    bob.request_ok("editing", editing("r05", "f", "start"))
        .await;
    editing_of(&mut all, "bob", "start", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    bob.request_ok("editing", editing("r12", "f", "start"))
        .await;
    let first = editing_of(&mut near, "bob", "start", WAIT).await.unwrap();
    assert_eq!(first["recordId"], "r12", "r05 is outside r10..r19");
    bob.request_ok(
        "cursor_position",
        json!({"tableId": "t", "cursor": {"recordId": "r30", "fieldId": "f"}}),
    )
    .await;
    all.take(|(e, _, _)| e == "cursor_position").await.unwrap();
    assert!(near
        .take_within(Duration::from_millis(300), |(e, _, _)| e
            == "cursor_position")
        .await
        .is_none());
    let (_, text) = t.a.get("/metrics");
    assert!(metric(&text, "rtsync_presence_relays_skipped_viewport_total") >= 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn viewport_filtering_reduces_relayed_frames() {
    let t = two(&[]).await;
    let mut watchers = Vec::new();
    for n in 0..5 {
        watchers.push(viewport_watcher(&t.a, &format!("w{n}")).await);
    }
    let mut editor = Client::subscribed(&t.b, "editor", "t").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 20 records, 10 inside the watchers' viewport (r10..r19).
    for n in 0..20 {
        editor
            .request_ok("editing", editing(&format!("r{:02}", n + 5), "f", "start"))
            .await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let mut received = 0;
    for w in &mut watchers {
        while editing_of(w, "editor", "start", Duration::from_millis(300))
            .await
            .is_some()
        {
            received += 1;
        }
    }
    eprintln!("5 watchers got {received} of 100 editing frames");
    assert_eq!(received, 50, "only r10..r19 reach them");
}

/// What Redis publishes on table `t`'s presence channel while it runs
/// (`redis-cli SSUBSCRIBE`), read back as text.
struct ChannelTap {
    child: std::process::Child,
    seen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ChannelTap {
    async fn start(redis: &RedisServer) -> ChannelTap {
        ChannelTap::run(redis, &["SSUBSCRIBE", "rts:{t}:presence"], "ssubscribe").await
    }

    /// Every command Redis runs, from now on.
    async fn monitor(redis: &RedisServer) -> ChannelTap {
        ChannelTap::run(redis, &["MONITOR"], "OK").await
    }

    /// `redis-cli` running `args`, once its output shows `ready`.
    async fn run(redis: &RedisServer, args: &[&str], ready: &str) -> ChannelTap {
        use std::io::BufRead;
        let port = redis.port.to_string();
        let mut child = std::process::Command::new("redis-cli")
            .args(["-c", "-p", &port])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-cli");
        let out = child.stdout.take().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&line);
            }
        });
        let deadline = std::time::Instant::now() + WAIT;
        while !seen.lock().unwrap().contains(ready) {
            assert!(std::time::Instant::now() < deadline, "redis-cli subscribed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ChannelTap { child, seen }
    }

    fn text(&self) -> String {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ChannelTap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_published_while_the_user_is_alone_on_the_table() {
    let t = two(&[]).await;
    let tap = ChannelTap::start(&t.redis).await;
    let mut alone = Client::subscribed(&t.a, "alone", "t").await;
    alone
        .request_ok("editing", editing("r1", "f", "start"))
        .await;
    alone
        .request_ok(
            "viewport",
            json!({"tableId": "t", "recordIds": ["r1", "r2"]}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    alone
        .request_ok("editing", editing("r1", "f", "stop"))
        .await;
    let _bob = Client::subscribed(&t.b, "bob", "t").await;
    // With someone to see it, the same start is published.
    let deadline = std::time::Instant::now() + WAIT;
    while !tap.text().contains("user_joined") {
        assert!(std::time::Instant::now() < deadline, "bob's join seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = tap.text();
    assert!(!before.contains("user_editing"), "{before}");
    assert!(!before.contains("user_viewport"), "{before}");
    alone
        .request_ok("editing", editing("r1", "f", "start"))
        .await;
    while !tap.text().contains("user_editing") {
        assert!(
            std::time::Instant::now() < deadline,
            "published once not alone"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU time (user + system, in clock ticks of 10 ms) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn counter(side: &Sidecar, name: &str, label: &str) -> f64 {
    let (_, text) = side.get("/metrics");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// 200 users on table `t`, alternating between the sidecars; with
/// `viewport`, each subscribes with `relay: "viewport"` and sees 20 of 200
/// rows. The first 20 are returned to edit; the others read in tasks that
/// count their frames.
async fn join_users(t: &Two, viewport: bool) -> (Vec<Client>, Vec<tokio::task::JoinHandle<u64>>) {
    const USERS: usize = 200;
    const EDITORS: usize = 20;
    let (mut editors, mut readers) = (Vec::new(), Vec::new());
    for u in 0..USERS {
        let side = if u % 2 == 0 { &t.a } else { &t.b };
        let mut c = Client::connect(side, &format!("u{u}")).await;
        let relay = if viewport { "viewport" } else { "all" };
        c.request_ok(
            "subscribe_to_table",
            json!({"tableId": "t", "relay": relay}),
        )
        .await;
        if viewport {
            let first = (u * 10) % 180;
            c.request_ok(
                "viewport",
                json!({"tableId": "t", "firstRecordId": format!("r{first:03}"),
                    "lastRecordId": format!("r{:03}", first + 19)}),
            )
            .await;
        }
        if u < EDITORS {
            editors.push(c);
        } else {
            readers.push(tokio::spawn(async move {
                let mut n = 0u64;
                while c.next(Duration::from_secs(3)).await.is_some() {
                    n += 1;
                }
                n
            }));
        }
    }
    (editors, readers)
}

/// Reads what `c` is sent for `d`, as a live client would.
async fn read_for(c: &mut Client, d: Duration) {
    let until = tokio::time::Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || c.next(left).await.is_none() {
            return;
        }
    }
}

fn both(t: &Two, name: &str, label: &str) -> f64 {
    counter(&t.a, name, label) + counter(&t.b, name, label)
}

/// One run: 200 users on a table over two sidecars, 20 of them moving an
/// editing indicator 5 times a second for 10 s. Returns the
/// `user_editing` frames sent per second and the sidecars' CPU (cores).
async fn measure_relay(viewport: bool) -> (f64, f64) {
    let t = two(&[]).await;
    let (editors, readers) = join_users(&t, viewport).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent0 = both(&t, "rtsync_messages_out_total", "user_editing");
    let cpu0 = cpu_ticks(t.a.pid()) + cpu_ticks(t.b.pid());
    let began = std::time::Instant::now();
    let mut handles = Vec::new();
    for (e, mut c) in editors.into_iter().enumerate() {
        handles.push(tokio::spawn(async move {
            for n in 0..50usize {
                let record = format!("r{:03}", (e * 37 + n * 11) % 200);
                c.send("editing", editing(&record, "f", "start"), None)
                    .await;
                read_for(&mut c, Duration::from_millis(200)).await;
            }
            c
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let secs = began.elapsed().as_secs_f64();
    let sent = both(&t, "rtsync_messages_out_total", "user_editing") - sent0;
    let cpu = (cpu_ticks(t.a.pid()) + cpu_ticks(t.b.pid()) - cpu0) as f64 / 100.0;
    let skipped = both(&t, "rtsync_presence_relays_skipped_viewport_total", "");
    let dropped = both(&t, "rtsync_presence_notices_dropped_total", "");
    let slow = both(&t, "rtsync_slow_consumer_disconnects_total", "");
    let mut received = 0u64;
    for r in readers {
        received += r.await.unwrap_or(0);
    }
    eprintln!(
        "viewport={viewport}: {:.0} user_editing frames/s sent over {secs:.1} s, sidecar CPU {:.1}% of a core (two sidecars), {skipped} relays skipped, {dropped} notices dropped, {slow} slow consumers, {received} frames read by the 180 readers",
        sent / secs,
        100.0 * cpu / secs
    );
    (sent / secs, cpu / secs)
}

/// The relay cost of editing indicators, with and without viewport
/// filtering (a measurement: `cargo test --test editing -- --ignored`).
#[ignore]
#[tokio::test(flavor = "multi_thread")]
async fn measure_editing_relay_cost_with_200_users() {
    let (all_frames, all_cpu) = measure_relay(false).await;
    let (vp_frames, vp_cpu) = measure_relay(true).await;
    eprintln!(
        "relay all: {all_frames:.0} frames/s, {:.1}% CPU; relay viewport: {vp_frames:.0} frames/s, {:.1}% CPU",
        all_cpu * 100.0,
        vp_cpu * 100.0
    );
    assert!(vp_frames < all_frames);
}

/// `count` distinct record ids of `bytes` bytes each.
fn ids(count: usize, bytes: usize) -> Vec<String> {
    (0..count).map(|n| format!("{n:0>bytes$}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewport_listing_more_than_16_kib_of_ids_is_refused() {
    let t = two(&[]).await;
    let mut c = Client::subscribed(&t.a, "wide", "t").await;
    let err = c
        .request(
            "viewport",
            json!({"tableId": "t", "recordIds": ids(500, 40)}),
        )
        .await
        .expect_err("20,000 bytes of ids");
    assert_eq!(err["code"], "bad_request", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("16384 bytes"),
        "{err}"
    );
    c.request_ok(
        "viewport",
        json!({"tableId": "t", "recordIds": ids(500, 32)}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn table_users_carries_viewports_only_within_its_byte_budget() {
    let t = two(&[]).await;
    let mut users = Vec::new();
    for n in 0..24 {
        let side = if n % 2 == 0 { &t.a } else { &t.b };
        let mut c = Client::subscribed(side, &format!("u{n}"), "t").await;
        c.request_ok(
            "viewport",
            json!({"tableId": "t", "recordIds": ids(500, 32)}),
        )
        .await;
        users.push(c);
    }
    let mut late = Client::subscribed(&t.a, "late", "t").await;
    let listed = late.expect_event("table_users").await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 25, "every user is listed");
    let with_viewport = listed
        .iter()
        .filter(|u| u.get("viewport").is_some())
        .count();
    assert!(with_viewport > 0, "viewports while the budget lasts");
    assert!(with_viewport < 24, "not all 24 x 16 KiB of them");
    let bytes = serde_json::to_string(listed).unwrap().len();
    assert!(
        bytes <= 256 * 1024 + 25 * 1024,
        "table_users is {bytes} bytes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn renewing_an_editing_indicator_keeps_one_expiry_check_per_user_and_table() {
    let t = two(&[("RTS_EDITING_TTL_MS", "1000")]).await;
    let mut alice = Client::subscribed(&t.a, "alice", "t").await;
    let mut bob = Client::subscribed(&t.a, "bob", "t").await;
    let tap = ChannelTap::monitor(&t.redis).await;
    // Twenty renewals, each past the 50 ms relay slot, so each is relayed.
    for _ in 0..20 {
        bob.request_ok("editing", editing("r1", "f", "start")).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    editing_of(&mut alice, "bob", "stop", WAIT)
        .await
        .expect("the indicator expires once the renewals stop");
    let checks = tap.text().matches("rtsync_presence_editing_expire").count();
    assert!(checks <= 2, "{checks} expiry checks for one indicator");
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_to_a_cell_outside_a_viewport_ends_the_indicator_the_watcher_saw() {
    let t = two(&[]).await;
    let mut near = viewport_watcher(&t.a, "near").await;
    let mut bob = Client::subscribed(&t.b, "bob", "t").await;
    bob.request_ok("editing", editing("r12", "f", "start"))
        .await;
    editing_of(&mut near, "bob", "start", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    bob.request_ok("editing", editing("r50", "f", "start"))
        .await;
    let stop = editing_of(&mut near, "bob", "stop", WAIT)
        .await
        .expect("r12 ends for the watcher who cannot see r50");
    assert_eq!(stop["recordId"], "r12");
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_to_a_hidden_field_ends_the_indicator_its_non_readers_saw() {
    let t = two(&[]).await;
    let intern = json!({"sub": "intern", "exp": now_secs() + 3600,
        "tables": {"*": {"access": "rw", "fields": {"salary": "none"}}}});
    let mut c = Client::connect_claims(&t.b, &intern, Enc::Json).await;
    c.request_ok("subscribe_to_table", json!({"tableId": "t"}))
        .await;
    let mut hr = Client::subscribed(&t.a, "hr", "t").await;
    hr.request_ok("editing", editing("r1", "name", "start"))
        .await;
    editing_of(&mut c, "hr", "start", WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    hr.request_ok("editing", editing("r1", "salary", "start"))
        .await;
    let stop = editing_of(&mut c, "hr", "stop", WAIT)
        .await
        .expect("name ends for the intern, who cannot see salary");
    assert_eq!(stop["fieldId"], "name");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_editing_start_on_a_field_the_user_may_not_write_is_forbidden() {
    let t = two(&[]).await;
    let viewer = json!({"sub": "viewer", "exp": now_secs() + 3600,
        "tables": {"*": {"access": "rw", "fields": {"salary": "none", "name": "r"}}}});
    let mut c = Client::connect_claims(&t.b, &viewer, Enc::Json).await;
    c.request_ok("subscribe_to_table", json!({"tableId": "t"}))
        .await;
    let mut hr = Client::subscribed(&t.a, "hr", "t").await;
    for field in ["salary", "name"] {
        let err = c
            .request("editing", editing("r1", field, "start"))
            .await
            .expect_err("no indicator on a cell one cannot edit");
        assert_eq!(err["code"], "forbidden", "{err}");
    }
    c.request_ok("editing", editing("r1", "status", "start"))
        .await;
    let seen = editing_of(&mut hr, "viewer", "start", WAIT).await.unwrap();
    assert_eq!(seen["fieldId"], "status", "only the writable field's start");
}
