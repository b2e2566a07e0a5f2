//! A WebSocket connection split at the byte level: tungstenite reads and
//! parses the client's frames from the read half, and the connection's
//! writer task owns the write half and writes frames itself
//! ([`crate::outbox::wire_writer`]). Splitting the TCP stream (rather than the
//! tungstenite stream) means no lock between reader and writer and no
//! tungstenite write buffer per connection.
//!
//! Tungstenite's own replies (the pong to a ping, the close reply) go to a
//! write side that discards them; the session answers pings and closes
//! through its outbox instead, so every byte sent comes from one writer in
//! queue order.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The reading side of a connection, as tungstenite sees it.
pub type Socket = WebSocketStream<ReadOnly>;

/// A read half that accepts and drops writes (see the module docs).
pub struct ReadOnly(ReadHalf);

impl AsyncRead for ReadOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadOnly {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Splits an upgraded connection. A plain TCP stream (what the server
/// accepts) splits into owned halves without a lock; anything else goes
/// through `tokio::io::split`. Bytes the HTTP layer read past the upgrade
/// request are handed to tungstenite first.
pub async fn split(upgraded: Upgraded, config: WebSocketConfig) -> (Socket, WriteHalf) {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (read, write) = parts.io.into_inner().into_split();
            let socket = WebSocketStream::from_partially_read(
                ReadOnly(Box::new(read)),
                parts.read_buf.to_vec(),
                Role::Server,
                Some(config),
            )
            .await;
            (socket, Box::new(write))
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            let socket = WebSocketStream::from_raw_socket(
                ReadOnly(Box::new(read)),
                Role::Server,
                Some(config),
            )
            .await;
            (socket, Box::new(write))
        }
    }
}
