//! Idle Engine.IO long-polling sessions on the sidecar's `/socket.io/`, for
//! the `idle --polling` scenario: each session is one HTTP/1.1 connection
//! that opens a session (`GET`), connects, authenticates and subscribes in
//! one `POST`, polls until the subscription's ack came, and then keeps one
//! `GET` pending. A task per session answers the server's pings (`2` →
//! `3`) and polls again, as an idle browser would, so sessions stay open
//! however long the measurement takes.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Engine.IO's packet separator in a polling payload.
const SEPARATOR: char = '\u{1e}';

/// Longest a handshake or answer may take before the session is given up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// One long-polling session's HTTP connection.
struct Session {
    stream: TcpStream,
    host: String,
    path: String,
}

impl Session {
    /// Opens a session on `host` (`host:port`): the handshake's `sid`.
    async fn open(host: &str) -> Result<Session> {
        let stream = TcpStream::connect(host)
            .await
            .with_context(|| format!("connect {host}"))?;
        let mut s = Session {
            stream,
            host: host.to_owned(),
            path: "/socket.io/?EIO=4&transport=polling".to_owned(),
        };
        let open = s.get().await?;
        let sid = open
            .strip_prefix('0')
            .and_then(|o| serde_json::from_str::<Value>(o).ok())
            .and_then(|o| o["sid"].as_str().map(str::to_owned))
            .with_context(|| format!("expected an Engine.IO open packet, got {open:?}"))?;
        s.path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
        Ok(s)
    }

    async fn get(&mut self) -> Result<String> {
        let req = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", self.path, self.host);
        self.stream.write_all(req.as_bytes()).await?;
        self.answer().await
    }

    async fn post(&mut self, body: &str) -> Result<String> {
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await?;
        self.answer().await
    }

    /// Reads one answer (its headers, then `Content-Length` bytes of body).
    async fn answer(&mut self) -> Result<String> {
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if self.stream.read(&mut byte).await? == 0 {
                bail!("connection closed");
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        if !head.starts_with("HTTP/1.1 200") {
            bail!("answer: {}", head.lines().next().unwrap_or(""));
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .context("answer without Content-Length")?;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// Opens a session, authenticates as `user` and subscribes to `table`; the
/// task then keeps one poll pending and answers pings until aborted.
pub async fn subscriber(host: &str, user: &str, table: &str) -> Result<JoinHandle<()>> {
    let mut s = Session::open(host).await?;
    let auth = json!(["authenticate", {"userId": user, "tables": crate::client::all_tables()}]);
    let sub = json!(["subscribe_to_table", {"tableId": table, "viewId": "v"}]);
    let body = format!("40{SEPARATOR}420{auth}{SEPARATOR}421{sub}");
    s.post(&body).await?;
    // Until the subscription's ack (`431`) came.
    loop {
        let got = tokio::time::timeout(ANSWER_TIMEOUT, s.get())
            .await
            .context("timed out waiting for the subscription's ack")??;
        if got.split(SEPARATOR).any(|p| p.starts_with("431")) {
            break;
        }
        if got
            .split(SEPARATOR)
            .any(|p| p == "1" || p.starts_with("44"))
        {
            bail!("session closed or refused: {got}");
        }
    }
    Ok(tokio::spawn(async move {
        let _ = stay(s).await;
    }))
}

/// Polls, answering each ping with a pong, until the session ends.
async fn stay(mut s: Session) -> Result<()> {
    loop {
        let got = s.get().await?;
        let packets: Vec<&str> = got.split(SEPARATOR).collect();
        if packets.contains(&"1") {
            return Ok(());
        }
        if packets.contains(&"2") {
            s.post("3").await?;
        }
    }
}

/// `host:port` of a sidecar given as `ws://host:port/ws`.
pub fn host_of(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("ws://")
        .context("a polling session needs a ws:// sidecar URL")?;
    Ok(rest.split('/').next().unwrap_or(rest).to_owned())
}
