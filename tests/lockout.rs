//! Sockets that never authenticate cannot lock real users out: the
//! unauthenticated cap closes the oldest waiting socket (4408) instead of
//! refusing new ones, a token in the upgrade never takes a waiting place,
//! and one source address only ever pushes out its own sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Client, RedisServer, Sidecar};

const ATTACKER: [u8; 4] = [127, 0, 0, 2];

/// `n` idle sockets from `from` that are reopened as soon as the server
/// closes one, until `stop`; counts the reopenings.
fn attackers(
    side: &Arc<Sidecar>,
    from: IpAddr,
    n: usize,
    stop: &Arc<AtomicBool>,
    reopened: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (side, stop, reopened) = (side.clone(), stop.clone(), reopened.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut c = Client::open_from(&side, from).await;
                    // Idle until the server closes it (or the test ends).
                    let _ = tokio::time::timeout(Duration::from_millis(500), c.closed()).await;
                    if c.close_code.is_some() {
                        reopened.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_reopening_idle_attackers_never_keep_a_user_out_for_a_second() {
    let redis = RedisServer::start().await;
    let side = Arc::new(Sidecar::start(&redis, "a", &[("RTS_MAX_UNAUTHENTICATED", "20")]).await);
    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicUsize::new(0));
    // From the users' own address: the worst case (a shared NAT).
    let local: IpAddr = IpAddr::from([127, 0, 0, 1]);
    let tasks = attackers(&side, local, 20, &stop, &reopened);
    support::wait_for(
        "the attackers holding every waiting place",
        Duration::from_secs(20),
        || async { (side.total_connections() >= 20).then_some(()) },
    )
    .await;
    let mut slowest = Duration::ZERO;
    for n in 0..30 {
        let began = Instant::now();
        let user = format!("u{n}");
        let c = if n % 2 == 0 {
            // Token in the first frame.
            Client::connect(&side, &user).await
        } else {
            // Token in the upgrade request.
            let token = support::tokens::token(&user);
            let mut c = Client::open(
                &side,
                None,
                &[("Authorization", &format!("Bearer {token}"))],
                "",
            )
            .await;
            c.expect_event("authenticated").await;
            c
        };
        slowest = slowest.max(began.elapsed());
        assert!(c.close_code.is_none(), "user {n} was closed");
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    eprintln!("slowest user to get in: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a user waited {slowest:?} to get in"
    );
    assert!(
        reopened.load(Ordering::Relaxed) > 0,
        "attackers were pushed out"
    );
    let (_, text) = side.get("/metrics");
    assert!(support::metric(&text, "rtsync_connections_refused_total") > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_only_pushes_out_its_own_waiting_sockets() {
    let redis = RedisServer::start().await;
    let side = Arc::new(
        Sidecar::start(
            &redis,
            "a",
            &[
                ("RTS_MAX_UNAUTHENTICATED", "20"),
                ("RTS_MAX_UNAUTHENTICATED_PER_IP", "5"),
            ],
        )
        .await,
    );
    // A user who opened a socket and has not authenticated yet.
    let mut slow_user = Client::open(&side, None, &[], "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicUsize::new(0));
    let tasks = attackers(&side, IpAddr::from(ATTACKER), 20, &stop, &reopened);
    // 20 sockets from one address with room for 5: they push each other
    // out, for ever.
    support::wait_for(
        "the attackers churning",
        Duration::from_secs(20),
        || async { (reopened.load(Ordering::Relaxed) > 100).then_some(()) },
    )
    .await;
    // Still open: it authenticates now.
    slow_user
        .request_ok(
            "authenticate",
            json!({"token": support::tokens::token("late")}),
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_cap_at_the_connection_cap_is_clamped_with_a_warning() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(
        &redis,
        "a",
        &[
            ("RTS_MAX_CONNECTIONS", "10"),
            ("RTS_MAX_UNAUTHENTICATED", "50"),
        ],
    )
    .await;
    side.wait_for_log(
        "RTS_MAX_UNAUTHENTICATED (50) must be below RTS_MAX_CONNECTIONS (10); using 5",
    )
    .await;
    // Six idle sockets: the oldest is closed, and users still get in.
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(Client::open(&side, None, &[], "").await);
    }
    assert_eq!(idle[0].closed().await, Some(4408));
    let _u = Client::connect(&side, "u").await;
}
