//! WebSocket `permessage-deflate` (docs/protocol.md 1.1) against a real
//! sidecar, with a raw client that offers the extension and reads and
//! writes RSV1 frames itself (tungstenite, the other tests' client, has no
//! permessage-deflate).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};
use support::client::{change, Client};
use support::tokens;
use support::{metric, RedisServer, Sidecar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// One frame as it came off the wire.
struct Frame {
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl Frame {
    /// The message it carries (inflated when RSV1 is set).
    fn message(&self) -> Vec<u8> {
        if !self.rsv1 {
            return self.payload.clone();
        }
        let mut input = self.payload.clone();
        input.extend_from_slice(&TAIL);
        let mut d = Decompress::new(false);
        let mut out = Vec::with_capacity(64 << 20);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .expect("inflates alone");
        out
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.message()).expect("json")
    }
}

/// A JSON-subprotocol connection that offers `extensions` (if any).
struct Raw {
    tcp: TcpStream,
    /// The `Sec-WebSocket-Extensions` answer, if any.
    extensions: Option<String>,
    rid: u64,
}

impl Raw {
    async fn open(side: &Sidecar, user: &str, extensions: Option<&str>) -> Raw {
        let query = format!("?token={}", tokens::token(user));
        let mut raw = Raw::upgrade(side, &query, extensions).await;
        raw.until("authenticated").await;
        raw
    }

    /// A connection that has not authenticated (no token in the URL).
    async fn upgrade(side: &Sidecar, query: &str, extensions: Option<&str>) -> Raw {
        let mut tcp = TcpStream::connect(side.addr).await.expect("connect");
        let offer = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /ws{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: rtsync.v1.json\r\n{offer}\r\n"
        );
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.expect("response"));
        }
        let head = String::from_utf8(head).expect("utf-8");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| v.trim().to_owned())
        });
        Raw {
            tcp,
            extensions,
            rid: 0,
        }
    }

    /// Sends a message, compressed when `compress`.
    async fn send(&mut self, message: &[u8], compress: bool) {
        let payload = if compress {
            deflate(message)
        } else {
            message.to_vec()
        };
        let mut out = vec![0x81 | if compress { 0x40 } else { 0 }];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let key = [0xa1, 0xb2, 0xc3, 0xd4];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        // The server may close while a large frame is being written.
        let _ = self.tcp.write_all(&out).await;
    }

    async fn request(&mut self, event: &str, data: Value, compress: bool) -> u64 {
        self.rid += 1;
        let message = serde_json::to_vec(&json!([event, data, self.rid])).expect("json");
        self.send(&message, compress).await;
        self.rid
    }

    /// The next frame; `None` once the socket closed.
    async fn frame(&mut self) -> Option<Frame> {
        let read = async {
            let mut h = [0u8; 2];
            self.tcp.read_exact(&mut h).await.ok()?;
            let len = match h[1] & 0x7f {
                126 => u64::from(self.tcp.read_u16().await.ok()?),
                127 => self.tcp.read_u64().await.ok()?,
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            self.tcp.read_exact(&mut payload).await.ok()?;
            Some(Frame {
                rsv1: h[0] & 0x40 != 0,
                opcode: h[0] & 0x0f,
                payload,
            })
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("a frame in time")
    }

    /// Frames up to the first carrying `event`, which is returned.
    async fn until(&mut self, event: &str) -> Frame {
        loop {
            let f = self.frame().await.expect("open");
            if f.opcode == 1 && f.json()[0] == event {
                return f;
            }
        }
    }

    /// The reply to `rid`.
    async fn reply(&mut self, rid: u64) -> Frame {
        loop {
            let f = self.frame().await.expect("open");
            if f.opcode == 1 && f.json()[2] == rid {
                return f;
            }
        }
    }

    /// The close code the server sent, reading past other frames.
    async fn close_code(&mut self) -> Option<u16> {
        while let Some(f) = self.frame().await {
            if f.opcode == 8 {
                return Some(u16::from_be_bytes([f.payload[0], f.payload[1]]));
            }
        }
        None
    }
}

/// A message as a client compresses it (raw deflate, tail removed).
fn deflate(message: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(message.len() + 64);
    c.compress_vec(message, &mut out, FlushCompress::Sync)
        .expect("deflates");
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

const OFFER: &str = "permessage-deflate; client_max_window_bits";

fn long_text(n: usize) -> String {
    (0..n)
        .map(|i| format!("cell {i} of a long text; "))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offer_is_answered_with_no_context_takeover_both_ways_and_none_without_it() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    for offer in [
        "permessage-deflate",
        OFFER,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=15; client_max_window_bits=12",
        "permessage-deflate; server_max_window_bits=9, permessage-deflate",
    ] {
        let raw = Raw::open(&side, "u1", Some(offer)).await;
        assert_eq!(raw.extensions.as_deref(), Some(ANSWER), "{offer}");
    }
    for offer in [
        None,
        Some("x-webkit-deflate-frame"),
        Some("permessage-deflate; server_max_window_bits=10"),
        Some("permessage-deflate; unknown_param"),
    ] {
        let raw = Raw::open(&side, "u1", offer).await;
        assert_eq!(raw.extensions, None, "{offer:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compression_off_declines_every_offer() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_COMPRESSION", "off")]).await;
    let raw = Raw::open(&side, "u1", Some(OFFER)).await;
    assert_eq!(raw.extensions, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_change_is_applied_and_a_large_page_comes_back_compressed() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut raw = Raw::open(&side, "u1", Some(OFFER)).await;
    let text = long_text(200);
    let rid = raw
        .request("record_change", change("t", "r1", "f1", json!(text)), true)
        .await;
    let ack = raw.reply(rid).await;
    assert!(!ack.rsv1, "a small ack goes plain");
    assert_eq!(ack.json()[0], "ack", "{}", ack.json());
    assert_eq!(ack.json()[1]["status"], "applied");
    let rid = raw
        .request("load_records", json!({"tableId": "t"}), false)
        .await;
    let page = raw.reply(rid).await;
    assert!(page.rsv1, "a page over the threshold is compressed");
    assert!(page.payload.len() < page.message().len() / 3);
    assert_eq!(page.json()[1]["records"][0]["fields"]["f1"], json!(text));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_subscriber_of_an_audience_gets_the_same_compressed_bytes_compressed_once() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut subs = Vec::new();
    for i in 0..3 {
        let mut raw = Raw::open(&side, &format!("s{i}"), Some(OFFER)).await;
        let rid = raw
            .request("subscribe_to_table", json!({"tableId": "t"}), false)
            .await;
        raw.reply(rid).await;
        subs.push(raw);
    }
    let mut writer = Client::connect_json(&side, "w").await;
    let before = metric(&side.get("/metrics").1, "rtsync_frames_compressed_total");
    let text = long_text(200);
    writer
        .request_ok("record_change", change("t", "r1", "f1", json!(text)))
        .await;
    let mut frames = Vec::new();
    for raw in &mut subs {
        frames.push(raw.until("record_change").await);
    }
    assert!(frames.iter().all(|f| f.rsv1));
    assert!(frames.iter().all(|f| f.payload == frames[0].payload));
    assert_eq!(frames[0].json()[1]["changes"][0]["newValue"], json!(text));
    let after = metric(&side.get("/metrics").1, "rtsync_frames_compressed_total");
    assert_eq!(after - before, 1.0, "one compression for the audience");
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_under_the_threshold_go_plain() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut raw = Raw::open(&side, "u1", Some(OFFER)).await;
    let rid = raw
        .request("subscribe_to_table", json!({"tableId": "t"}), false)
        .await;
    raw.reply(rid).await;
    let mut writer = Client::connect_json(&side, "w").await;
    writer
        .request_ok("record_change", change("t", "r1", "f1", json!("short")))
        .await;
    let event = raw.until("record_change").await;
    assert!(!event.rsv1);
}

/// A frame inflating to 64 MiB (a JSON string of one byte), about 64 KiB
/// on the wire; its close code.
async fn send_bomb(side: &Sidecar, packed: &[u8]) -> Option<u16> {
    let mut raw = Raw::open(side, "u1", Some(OFFER)).await;
    let mut frame = vec![0xc1, 0x80 | 127];
    frame.extend_from_slice(&(packed.len() as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(packed);
    let _ = raw.tcp.write_all(&frame).await;
    raw.close_code().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deflate_bomb_is_closed_4413_without_the_sidecar_growing() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut bomb = b"[\"record_change\",\"".to_vec();
    bomb.resize(64 << 20, b'a');
    let packed = deflate(&bomb);
    drop(bomb);
    assert!(packed.len() < 256 << 10);
    // Five bombs of 64 MiB each: the sidecar never holds one (it stops
    // at RTS_MAX_FRAME_BYTES, 1 MiB, of inflated bytes), so its peak stays
    // far under one bomb's size.
    let before = support::rss_bytes(side.pid());
    for _ in 0..5 {
        assert_eq!(send_bomb(&side, &packed).await, Some(4413));
    }
    let grown = support::peak_rss_bytes(side.pid()).saturating_sub(before);
    eprintln!("five 64 MiB deflate bombs: peak growth {grown} bytes");
    assert!(grown < 48 << 20, "the sidecar grew {grown} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn before_authenticate_a_compressed_frame_inflating_past_16_kib_is_closed_4413() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut raw = Raw::upgrade(&side, "", Some(OFFER)).await;
    assert_eq!(raw.extensions.as_deref(), Some(ANSWER));
    let mut message = b"[\"authenticate\",{\"token\":\"".to_vec();
    message.resize(64 << 10, b'a');
    message.extend_from_slice(b"\"},1]");
    raw.send(&message, true).await;
    assert_eq!(raw.close_code().await, Some(4413));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmasked_continuation_of_a_compressed_message_ends_only_its_connection() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut bad = Raw::open(&side, "u1", Some(OFFER)).await;
    let packed = deflate(long_text(2000).as_bytes());
    let first = &packed[..packed.len() / 2];
    let mut out = vec![0x41, 0x80 | 126];
    out.extend_from_slice(&(first.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(first);
    out.extend_from_slice(&[0x80, 3, b'a', b'b', b'c']);
    bad.tcp.write_all(&out).await.expect("write");
    // Closed by the session (a panicking reader would only drop it).
    assert!(bad.close_code().await.is_some());
    let mut good = Raw::open(&side, "u1", Some(OFFER)).await;
    let rid = good
        .request("load_records", json!({"tableId": "t"}), false)
        .await;
    assert_eq!(good.reply(rid).await.json()[1]["records"], json!([]));
}

/// An HTTP/1.0 request with a byte body: (status, headers, body bytes).
fn http(side: &Sidecar, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(side.addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let req = format!(
        "{head}\r\nHost: x\r\nAuthorization: Bearer test-api-token-0123\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers");
    let headers = String::from_utf8_lossy(&out[..at]).to_ascii_lowercase();
    let status = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, headers, out[at + 4..].to_vec())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gunzips");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_body_is_read_and_a_large_api_response_is_gzipped_when_accepted() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let text = long_text(200);
    let seed = json!({"records": [{"recordId": "r1", "version": 1, "fields": {"f1": text}}]});
    let (status, _, body) = http(
        &side,
        "POST /api/v1/sync/tables/t/records HTTP/1.0\r\nContent-Type: application/json\r\nContent-Encoding: gzip",
        &gzip(seed.to_string().as_bytes()),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let get = "GET /api/v1/sync/tables/t/records HTTP/1.0";
    let (status, headers, body) = http(&side, &format!("{get}\r\nAccept-Encoding: gzip, br"), b"");
    assert_eq!(status, 200);
    assert!(headers.contains("content-encoding: gzip"), "{headers}");
    let page: Value = serde_json::from_slice(&gunzip(&body)).expect("json");
    assert_eq!(page["data"]["records"][0]["fields"]["f1"], json!(text));
    let (_, headers, body) = http(&side, get, b"");
    assert!(!headers.contains("content-encoding"), "{headers}");
    assert!(serde_json::from_slice::<Value>(&body).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_body_inflating_past_the_body_limit_is_413() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut bomb = b"{\"records\": [], \"x\": \"".to_vec();
    bomb.resize(64 << 20, b'a');
    let packed = gzip(&bomb);
    let (status, _, _) = http(
        &side,
        "POST /api/v1/sync/tables/t/records HTTP/1.0\r\nContent-Type: application/json\r\nContent-Encoding: gzip",
        &packed,
    );
    assert_eq!(status, 413);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_polling_response_is_deflated_when_accepted() {
    use std::io::Read;
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[("RTS_COMPRESSION_THRESHOLD", "1")]).await;
    let (status, headers, body) = http(
        &side,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.0\r\nAccept-Encoding: deflate",
        b"",
    );
    assert_eq!(status, 200);
    assert!(headers.contains("content-encoding: deflate"), "{headers}");
    let mut open = String::new();
    flate2::read::ZlibDecoder::new(&body[..])
        .read_to_string(&mut open)
        .expect("inflates");
    assert!(open.starts_with("0{"), "{open}");
}

/// A polling session's sid, from its `open` packet.
fn polling_sid(side: &Sidecar) -> String {
    let (status, _, body) = http(
        side,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.0",
        b"",
    );
    assert_eq!(status, 200);
    let open: Value = serde_json::from_slice(&body[1..]).expect("open packet");
    open["sid"].as_str().expect("sid").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_or_deflate_polling_post_is_inflated_and_its_packets_are_read() {
    use std::io::Write;
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let connect = format!("40{}", json!({"token": tokens::token("u1")}));
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    zlib.write_all(connect.as_bytes()).unwrap();
    for (coding, body) in [
        ("gzip", gzip(connect.as_bytes())),
        ("deflate", zlib.finish().unwrap()),
    ] {
        let sid = polling_sid(&side);
        let post = format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.0\r\nContent-Type: text/plain\r\nContent-Encoding: {coding}"
        );
        let (status, _, answer) = http(&side, &post, &body);
        assert_eq!((status, &answer[..]), (200, &b"ok"[..]), "{coding}");
        let get = format!("GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.0");
        let (_, _, poll) = http(&side, &get, b"");
        let poll = String::from_utf8_lossy(&poll);
        assert!(poll.starts_with("40{\"sid\""), "{coding}: {poll}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_polling_post_inflating_past_the_frame_limit_is_refused_too_large_and_ends_the_session(
) {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut bomb = b"4".to_vec();
    bomb.resize(64 << 20, b'a');
    let packed = gzip(&bomb);
    drop(bomb);
    let sid = polling_sid(&side);
    let before = support::rss_bytes(side.pid());
    let post = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.0\r\nContent-Type: text/plain\r\nContent-Encoding: gzip"
    );
    let (status, _, answer) = http(&side, &post, &packed);
    // Engine.IO answers its errors 400 with a code and message.
    assert_eq!(status, 400);
    let answer: Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(answer["message"], "Payload too large");
    let metrics = side.get("/metrics").1;
    assert_eq!(metric(&metrics, "rtsync_http_bodies_refused_total"), 1.0);
    let grown = support::peak_rss_bytes(side.pid()).saturating_sub(before);
    assert!(grown < 32 << 20, "the sidecar grew {grown} bytes");
    let get = format!("GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.0");
    assert_eq!(http(&side, &get, b"").0, 400, "the session is gone");
}

/// BENCHMARKS.md: bytes on the wire of a 500-record `load_records` page of
/// a 30-field table (numbers, short strings, a long text), compressed and
/// plain. Run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn measure_a_500_record_page_compressed_and_plain() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let records: Vec<Value> = (0..500)
        .map(|i| {
            let mut fields = serde_json::Map::new();
            for f in 0..30 {
                let value = match f % 5 {
                    0 => json!(i * 31 + f),
                    1 => json!(format!("status-{}", (i + f) % 7)),
                    2 => json!(f64::from(i) * 1.5 + f64::from(f)),
                    3 => json!(f % 2 == 0),
                    _ => json!(format!(
                        "Notes for row {i}: customer asked about delivery {f}, follow up next week."
                    )),
                };
                fields.insert(format!("fld{f:02}"), value);
            }
            json!({"recordId": format!("rec{i:04}"), "version": 1, "fields": fields})
        })
        .collect();
    let (status, _, _) = http(
        &side,
        "POST /api/v1/sync/tables/t/records HTTP/1.0\r\nContent-Type: application/json",
        json!({"records": records}).to_string().as_bytes(),
    );
    assert_eq!(status, 200);
    let mut raw = Raw::open(&side, "u1", Some(OFFER)).await;
    let rid = raw
        .request("load_records", json!({"tableId": "t", "limit": 500}), false)
        .await;
    let page = raw.reply(rid).await;
    assert_eq!(page.json()[1]["records"].as_array().unwrap().len(), 500);
    eprintln!(
        "500-record page (JSON): plain {} bytes, compressed {} bytes ({:.1}x)",
        page.message().len(),
        page.payload.len(),
        page.message().len() as f64 / page.payload.len() as f64
    );
}

/// A cell edit as a spreadsheet sends it: event `i` of a table changes a
/// status, a number and a note of about `note` bytes of prose.
fn edit(i: usize, note: usize) -> Value {
    const WORDS: [&str; 16] = [
        "customer",
        "asked",
        "about",
        "delivery",
        "of",
        "order",
        "next",
        "week",
        "invoice",
        "sent",
        "to",
        "accounting",
        "before",
        "review",
        "please",
        "check",
    ];
    let mut text = format!("Row {i}: ");
    let mut k = i.wrapping_mul(2_654_435_761);
    while text.len() < note {
        k = k
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        text.push_str(WORDS[(k >> 60) % 16]);
        text.push(' ');
    }
    json!({"type": "update", "recordId": format!("rec{:04}", i % 500), "tableId": "t",
    "changes": [
        {"fieldId": "status", "newValue": format!("status-{}", i % 7)},
        {"fieldId": "amount", "newValue": i * 37 % 10_000},
        {"fieldId": "note", "newValue": text},
    ]})
}

/// Bytes a compressing connection read (payloads as sent) and what they
/// stand for (plain), over every frame up to the first carrying `last`.
async fn wire_bytes_until(raw: &mut Raw, last: &str) -> (usize, usize) {
    let (mut wire, mut plain) = (0, 0);
    loop {
        let f = raw.frame().await.expect("open");
        wire += f.payload.len();
        plain += f.message().len();
        if f.opcode == 1 && f.json()[0] == last {
            return (wire, plain);
        }
    }
}

/// BENCHMARKS.md: bytes on the wire of a 1,000-event recovery (edits of a
/// status, a number and a 100-byte note), compressed and plain. Run with
/// `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn measure_a_1000_event_recovery_compressed_and_plain() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut writer = Client::connect_json(&side, "w").await;
    for i in 0..1000 {
        writer.request_ok("record_change", edit(i, 100)).await;
    }
    let mut raw = Raw::open(&side, "u1", Some(OFFER)).await;
    let rid = raw
        .request(
            "recover_connection",
            json!({"tableId": "t", "lastEventId": "0-0"}),
            false,
        )
        .await;
    let ack = raw.reply(rid).await;
    assert_eq!(ack.json()[1]["missedEventsCount"], 1000, "{}", ack.json());
    let (wire, plain) = wire_bytes_until(&mut raw, "connection_recovered").await;
    eprintln!(
        "1,000-event recovery (JSON): plain {plain} bytes, compressed {wire} bytes ({:.1}x)",
        plain as f64 / wire as f64
    );
}

/// BENCHMARKS.md: bytes on the wire per live event of 2 KB edits (a note of
/// about 1,900 bytes of prose), compressed and plain, 100 events. Run with
/// `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn measure_live_fan_out_of_2_kb_edits_compressed_and_plain() {
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let mut raw = Raw::open(&side, "u1", Some(OFFER)).await;
    let rid = raw
        .request("subscribe_to_table", json!({"tableId": "t"}), false)
        .await;
    raw.reply(rid).await;
    let mut writer = Client::connect_json(&side, "w").await;
    for i in 0..100 {
        writer.request_ok("record_change", edit(i, 1900)).await;
    }
    // Events written back to back may come batched (`batch_changes`).
    let (mut wire, mut plain, mut events, mut frames) = (0, 0, 0, 0);
    while events < 100 {
        let f = raw.frame().await.expect("open");
        if f.opcode != 1 {
            continue;
        }
        let message = f.json();
        events += match message[0].as_str() {
            Some("record_change") => 1,
            Some("batch_changes") => message[1].as_array().map_or(0, Vec::len),
            _ => continue,
        };
        frames += 1;
        wire += f.payload.len();
        plain += f.message().len();
    }
    eprintln!("live 2 KB edits: 100 events in {frames} frames");
    eprintln!(
        "live 2 KB edits (JSON), per event: plain {} bytes, compressed {} bytes ({:.1}x)",
        plain / 100,
        wire / 100,
        plain as f64 / wire as f64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn node_ws_and_socketio_client_with_per_message_deflate_converge() {
    let dir = support::node::dir("tests/socketio");
    if !support::node::ready(
        &dir.join("node_modules/socket.io-client"),
        "run scripts/ensure-browser.sh",
    ) {
        return;
    }
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let env = vec![
        ("RTSYNC_URL", side.http_url()),
        ("RTSYNC_TOKEN", tokens::token("u1")),
    ];
    let passed = support::node::run_tests(dir, &["compression.test.mjs"], env).await;
    assert!(passed, "tests/socketio/compression.test.mjs failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_websockets_exchanges_compressed_frames_and_converges() {
    let python_ok = std::process::Command::new("python3")
        .args(["-c", "import websockets.asyncio.client"])
        .status()
        .is_ok_and(|s| s.success());
    if !python_ok {
        assert!(
            std::env::var_os("RTSYNC_SKIP_BROWSER").is_some(),
            "python3 with websockets >= 13 is missing: pip install websockets"
        );
        return;
    }
    let redis = RedisServer::start().await;
    let side = Sidecar::start(&redis, "a", &[]).await;
    let before = metric(&side.get("/metrics").1, "rtsync_frames_compressed_total");
    let tokens = json!({"u1": tokens::token("u1"), "u2": tokens::token("u2")});
    let script = support::node::dir("tests/socketio/websockets_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .env("RTSYNC_WS_URL", format!("ws://{}/ws", side.addr))
        .env("RTSYNC_TOKENS", tokens.to_string())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("in time")
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python websockets client failed: {stderr}"
    );
    let after = metric(&side.get("/metrics").1, "rtsync_frames_compressed_total");
    assert!(after > before, "the sidecar sent compressed frames");
}
