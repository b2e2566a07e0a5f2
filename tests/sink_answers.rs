//! What the sink does with a receiver's answers it must not trust: a
//! redirect is never followed (a 301/302/303 would turn the POST into a GET
//! whose 200 acknowledges a batch nobody received; a 307/308 would send the
//! signed body to another origin), and of a refusal's body only a few KB
//! are read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive Redis directly, as a producer or an operator would.
#![allow(clippy::disallowed_methods)]

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::{wait_for, Client, RedisServer, Sidecar};
use tokio::net::TcpListener;

const LONG: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
enum Mode {
    /// Every POST is answered with this redirect status to `/moved`.
    Redirect(u16),
    /// Every POST is answered 400 with a body of this many MiB.
    HugeRefusal(usize),
}

/// A receiver that answers every POST as `mode` says; counts the requests
/// that reach `/moved`.
async fn receiver(mode: Mode) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let moved = Arc::new(AtomicUsize::new(0));
    let hits = moved.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let hits = hits.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let hits = hits.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let method = req.method().clone();
                        let _ = req.into_body().collect().await;
                        let response: Response<BoxBody<Bytes, Infallible>> = if path == "/moved" {
                            hits.fetch_add(1, Ordering::SeqCst);
                            Response::new(Full::new(Bytes::from_static(b"ok")).boxed())
                        } else {
                            match (mode, method) {
                                (Mode::Redirect(status), Method::POST) => Response::builder()
                                    .status(status)
                                    .header("Location", format!("http://{addr}/moved"))
                                    .body(Full::new(Bytes::new()).boxed())
                                    .unwrap(),
                                (Mode::HugeRefusal(mib), Method::POST) => {
                                    let chunks = futures_util::stream::iter((0..mib).map(|_| {
                                        Ok::<_, Infallible>(Frame::data(Bytes::from(vec![
                                            b'e';
                                            1 << 20
                                        ])))
                                    }));
                                    Response::builder()
                                        .status(400)
                                        .body(StreamBody::new(chunks).boxed())
                                        .unwrap()
                                }
                                _ => Response::new(Full::new(Bytes::new()).boxed()),
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/events"), moved)
}

async fn dead_letters(redis: &RedisServer, table: &str) -> Vec<rtsync::store::tailer::Entry> {
    let dead: redis::Value = redis::cmd("XRANGE")
        .arg(format!("rts:{{{table}}}:dead"))
        .arg("-")
        .arg("+")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    rtsync::store::tailer::entries(dead)
}

fn field(e: &rtsync::store::tailer::Entry, k: &str) -> String {
    e.1.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

async fn write_one(side: &Sidecar, table: &str) {
    let mut c = Client::connect(side, "w").await;
    c.request_ok(
        "record_change",
        support::client::change(table, "r", "f", json!(1)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_is_never_followed_and_dead_letters_the_batch_with_its_location() {
    for status in [301u16, 302, 303, 307, 308] {
        let redis = RedisServer::start().await;
        let side = Sidecar::start(&redis, "a", &[]).await;
        let table = format!("redir{status}");
        write_one(&side, &table).await;
        let (url, moved) = receiver(Mode::Redirect(status)).await;
        let _sink = Sidecar::start_sink(&redis, "sink", &[("RTS_SINK_URL", url.as_str())]).await;
        let dead = wait_for("the dead letter", LONG, || async {
            let d = dead_letters(&redis, &table).await;
            (!d.is_empty()).then_some(d)
        })
        .await;
        assert_eq!(field(&dead[0], "status"), status.to_string());
        let reason = field(&dead[0], "reason");
        assert!(
            reason.contains("redirect to http://") && reason.contains("/moved"),
            "{reason}"
        );
        assert_eq!(
            moved.load(Ordering::SeqCst),
            0,
            "{status}: the redirect was followed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_with_a_1_gib_body_costs_the_sink_a_few_kb() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    write_one(&side, "huge").await;
    let (url, _) = receiver(Mode::HugeRefusal(1024)).await;
    let sink = Sidecar::start_sink(&redis, "sink", &[("RTS_SINK_URL", url.as_str())]).await;
    let dead = wait_for("the dead letter", LONG, || async {
        let d = dead_letters(&redis, "huge").await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(field(&dead[0], "status"), "400");
    assert!(field(&dead[0], "reason").len() <= 512);
    let peak = support::peak_rss_bytes(sink.pid());
    eprintln!("the sink's peak RSS after a 1 GiB refusal: {peak} bytes");
    assert!(
        peak < 64 * 1024 * 1024,
        "the sink's peak RSS was {peak} bytes"
    );
}
