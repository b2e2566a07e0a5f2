//! A lean benchmark client: connect and authenticate, send frames, wait for
//! acks, and read change events without building a JSON tree per frame.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub type Ws = tokio_tungstenite::WebSocketStream<crate::wire::Conn>;

/// How every connection of this run is made (the global flags).
#[derive(Clone, Copy, Default)]
pub struct WireOptions {
    /// Offer `permessage-deflate` (and inflate what comes compressed).
    pub deflate: bool,
    /// Pad each stamped change with text so its event is about this many
    /// bytes (0: no padding).
    pub event_bytes: usize,
}

static OPTIONS: std::sync::OnceLock<WireOptions> = std::sync::OnceLock::new();

/// Sets the options once, before the first connection.
pub fn set_options(options: WireOptions) {
    let _ = OPTIONS.set(options);
}

pub fn options() -> WireOptions {
    OPTIONS.get().copied().unwrap_or_default()
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn encode(frame: &Value) -> Result<Message> {
    Ok(Message::Binary(rmp_serde::to_vec_named(frame)?.into()))
}

/// Every table, every field: the grant of every bench user but the masked
/// classes of `fanout --classes`.
pub fn all_tables() -> Value {
    json!({"*": "rw"})
}

/// The grant of permission class `class` of `fanout --classes`: class 0
/// reads every field, class k hides the first k of [`HIDDEN_FIELDS`].
pub fn class_grant(class: usize) -> Value {
    if class == 0 {
        return all_tables();
    }
    let hidden: serde_json::Map<String, Value> = HIDDEN_FIELDS
        .iter()
        .take(class)
        .map(|f| (f.to_string(), json!("none")))
        .collect();
    json!({"*": {"access": "rw", "fields": hidden}})
}

/// Fields a wide stamped change writes beside its stamp, which the masked
/// classes do not see.
pub const HIDDEN_FIELDS: [&str; 4] = ["salary", "phone", "email", "address"];

fn token(secret: &str, user: &str, grant: &Value) -> Result<String> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp, "tables": grant}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Opens a WebSocket with small buffers: the idle scenario opens thousands.
/// With `--deflate` it offers `permessage-deflate` as a browser does.
pub async fn open(url: &str) -> Result<Ws> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20);
    let mut request = url
        .into_client_request()
        .with_context(|| format!("url {url}"))?;
    let deflate = options().deflate;
    if deflate {
        request.headers_mut().insert(
            "Sec-WebSocket-Extensions",
            HeaderValue::from_static(crate::wire::OFFER),
        );
    }
    let uri = request.uri();
    let addr = format!(
        "{}:{}",
        uri.host().unwrap_or("127.0.0.1"),
        uri.port_u16().unwrap_or(80)
    );
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connect {url}"))?;
    tcp.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        request,
        crate::wire::Conn::new(tcp, deflate),
        Some(config),
    )
    .await
    .with_context(|| format!("handshake {url}"))?;
    Ok(ws)
}

/// Connects and authenticates (dev form without a secret).
pub async fn connect(url: &str, secret: Option<&str>, user: &str) -> Result<Ws> {
    connect_as(url, secret, user, &all_tables()).await
}

/// [`connect`] with a grant of the user's own (the token's `tables`).
pub async fn connect_as(url: &str, secret: Option<&str>, user: &str, grant: &Value) -> Result<Ws> {
    let mut ws = open(url).await?;
    let auth = match secret {
        Some(s) => json!({"token": token(s, user, grant)?}),
        None => json!({"userId": user, "userName": user, "tables": grant}),
    };
    ws.send(encode(&json!(["authenticate", auth, 0]))?).await?;
    wait_ack(&mut ws, 0).await?;
    Ok(ws)
}

/// Connects, authenticates and subscribes to `table`.
pub async fn subscriber(url: &str, secret: Option<&str>, user: &str, table: &str) -> Result<Ws> {
    let mut ws = connect(url, secret, user).await?;
    ws.send(encode(
        &json!(["subscribe_to_table", {"tableId": table, "viewId": "v"}, 1]),
    )?)
    .await?;
    wait_ack(&mut ws, 1).await?;
    Ok(ws)
}

/// Waits for the answer to `rid`, skipping other frames.
pub async fn wait_ack(ws: &mut Ws, rid: u64) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .context("timed out waiting for an ack")?
            .context("connection closed")??;
        let Message::Binary(b) = msg else { continue };
        let Some(name) = event_name(&b) else { continue };
        if name != "ack" && name != "error" {
            continue;
        }
        let v: Value = rmp_serde::from_slice(&b)?;
        if v[2].as_u64() == Some(rid) {
            if name == "error" {
                bail!("request {rid} failed: {}", v[1]);
            }
            return Ok(v[1].clone());
        }
    }
}

/// The event name of a MessagePack frame, without decoding the rest.
pub fn event_name(frame: &[u8]) -> Option<&str> {
    let rest = frame.get(1..)?;
    rmp::decode::read_str_from_slice(rest).ok().map(|(s, _)| s)
}

/// The request id an `ack` or `error` frame answers.
pub fn answer_rid(frame: &[u8]) -> Option<u64> {
    rmp_serde::from_slice::<(IgnoredAny, IgnoredAny, u64)>(frame)
        .ok()
        .map(|(_, _, rid)| rid)
}

#[derive(Deserialize)]
struct AckData {
    #[serde(default)]
    status: Option<String>,
}

/// Whether an `ack` of a change says it was committed (and so will come to
/// the table's subscribers).
pub fn ack_committed(frame: &[u8]) -> bool {
    match rmp_serde::from_slice::<(IgnoredAny, AckData, u64)>(frame) {
        Ok((_, a, _)) => matches!(
            a.status.as_deref(),
            Some("applied" | "merged" | "overwritten")
        ),
        Err(_) => false,
    }
}

#[derive(Deserialize)]
pub struct Event {
    pub id: StreamKey,
    #[serde(default)]
    pub changes: Option<Vec<Change>>,
}

#[derive(Deserialize)]
pub struct Change {
    #[serde(rename = "newValue", default)]
    pub new_value: Option<Stamp>,
}

#[derive(Deserialize)]
pub struct Stamp {
    #[serde(rename = "sentUs", default)]
    pub sent_us: Option<u64>,
}

/// A stream id `ms-seq`, parsed while decoding (no string kept per event:
/// subscribers hold every id they got, for loss and duplicate counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamKey(pub u64, pub u64);

impl<'de> Deserialize<'de> for StreamKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StreamKey, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StreamKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a stream id")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StreamKey, E> {
                let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
                match (ms.parse(), seq.parse()) {
                    (Ok(ms), Ok(seq)) => Ok(StreamKey(ms, seq)),
                    _ => Err(E::custom("not a stream id")),
                }
            }
        }
        d.deserialize_str(V)
    }
}

impl Event {
    pub fn sent_us(&self) -> Option<u64> {
        self.changes.as_ref()?.first()?.new_value.as_ref()?.sent_us
    }
}

/// Change events of one frame (`record_change` or `batch_changes`).
pub fn events(frame: &[u8]) -> Vec<Event> {
    match event_name(frame) {
        Some("record_change") => rmp_serde::from_slice::<(IgnoredAny, Event)>(frame)
            .map(|(_, e)| vec![e])
            .unwrap_or_default(),
        Some("batch_changes") => rmp_serde::from_slice::<(IgnoredAny, Vec<Event>)>(frame)
            .map(|(_, e)| e)
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}
