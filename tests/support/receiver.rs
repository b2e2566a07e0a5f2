//! The app's side of `rtsync sink` in tests: an HTTP server on a free port
//! that records every POST (body, signature, arrival order) and answers as
//! the test's `answer` function says (a status, after an optional delay).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub struct Received {
    pub body: Value,
    pub raw: Vec<u8>,
    pub signature: Option<String>,
    /// `X-Rtsync-Timestamp` and `X-Rtsync-Timestamp-Signature`.
    pub timestamp: Option<String>,
    pub timestamp_signature: Option<String>,
    /// The answer it got (a status).
    pub status: u16,
}

type Answer = dyn Fn(usize, &Value) -> (u16, Duration) + Send + Sync;

pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Requests that arrived (answered or not yet).
    pub arrived: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Answers 200 at once to everything.
    pub async fn ok() -> Receiver {
        Self::start(|_, _| (200, Duration::ZERO)).await
    }

    /// `answer(n, body)` for the n-th request (from 0): status and delay.
    pub async fn start(
        answer: impl Fn(usize, &Value) -> (u16, Duration) + Send + Sync + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr: SocketAddr = listener.local_addr().expect("receiver addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let rec = received.clone();
        let arrived = count.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (rec, answer, count) = (rec.clone(), answer.clone(), count.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (rec, answer, count) = (rec.clone(), answer.clone(), count.clone());
                        async move {
                            let header = |name: &str| {
                                req.headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned)
                            };
                            let signature = header("x-rtsync-signature");
                            let timestamp = header("x-rtsync-timestamp");
                            let timestamp_signature = header("x-rtsync-timestamp-signature");
                            let raw = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let (status, delay) = answer(n, &body);
                            tokio::time::sleep(delay).await;
                            if let Ok(mut r) = rec.lock() {
                                r.push(Received {
                                    body,
                                    raw,
                                    signature,
                                    timestamp,
                                    timestamp_signature,
                                    status,
                                });
                            }
                            let mut resp =
                                Response::new(Full::new(Bytes::from_static(b"refused: bad event")));
                            *resp.status_mut() =
                                StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            url: format!("http://{addr}/events"),
            received,
            arrived,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Ids of the events of every 2xx-answered batch, in arrival order.
    pub fn delivered_ids(&self) -> Vec<String> {
        self.received()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| r.body["events"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
