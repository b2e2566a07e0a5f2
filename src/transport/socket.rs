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

use super::inflate::{Inflater, Need, CHUNK};

pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The reading side of a connection, as tungstenite sees it.
pub type Socket = WebSocketStream<ReadOnly>;

/// A read half that accepts and drops writes (see the module docs), and
/// that inflates compressed messages for tungstenite when the connection
/// negotiated `permessage-deflate` ([`super::inflate`]).
pub struct ReadOnly {
    read: ReadHalf,
    /// Bytes the HTTP layer read past the upgrade request, read first.
    prefix: Vec<u8>,
    inflate: Option<Box<Inflater>>,
}

impl ReadOnly {
    fn new(read: ReadHalf) -> ReadOnly {
        ReadOnly {
            read,
            prefix: Vec::new(),
            inflate: None,
        }
    }

    /// Raw bytes from the prefix, then the socket.
    fn poll_source(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.read).poll_read(cx, buf)
    }

    /// Bounds what a compressed message may inflate to (see
    /// [`Inflater::set_bound`]); nothing when the connection did not
    /// negotiate compression.
    pub fn set_inflate_bound(&mut self, bound: usize) {
        if let Some(inflater) = self.inflate.as_mut() {
            inflater.set_bound(bound);
        }
    }

    /// Reads through the inflater: what it has ready, else the raw bytes
    /// it asks for (see [`super::inflate`]).
    fn poll_inflated(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut raw = [0u8; CHUNK];
        loop {
            let Some(inflater) = self.inflate.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let (want, passthrough) = match inflater.need() {
                Need::Output => {
                    let ready = inflater.ready();
                    let n = ready.len().min(buf.remaining());
                    buf.put_slice(&ready[..n]);
                    inflater.consume(n);
                    return Poll::Ready(Ok(()));
                }
                Need::End => return Poll::Ready(Ok(())),
                Need::Passthrough(max) => (max.min(buf.remaining()).min(CHUNK), true),
                Need::Input(max) => (max.min(CHUNK), false),
            };
            let mut raw_buf = ReadBuf::new(&mut raw[..want]);
            std::task::ready!(self.poll_source(cx, &mut raw_buf))?;
            let got = raw_buf.filled();
            if got.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let Some(inflater) = self.inflate.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            if passthrough {
                buf.put_slice(got);
                inflater.passed(got.len());
                return Poll::Ready(Ok(()));
            }
            inflater.feed(got);
        }
    }
}

impl AsyncRead for ReadOnly {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.inflate.is_some() {
            this.poll_inflated(cx, buf)
        } else {
            this.poll_source(cx, buf)
        }
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
/// request are read first. With `inflate` (the connection negotiated
/// `permessage-deflate`; the bound of an inflated message) compressed
/// messages are inflated before tungstenite reads them.
pub async fn split(
    upgraded: Upgraded,
    config: WebSocketConfig,
    inflate: Option<usize>,
) -> (Socket, WriteHalf) {
    let (mut read, write) = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (read, write) = parts.io.into_inner().into_split();
            let mut read = ReadOnly::new(Box::new(read));
            read.prefix = parts.read_buf.to_vec();
            (read, Box::new(write) as WriteHalf)
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            (ReadOnly::new(Box::new(read)), Box::new(write) as WriteHalf)
        }
    };
    read.inflate = inflate.map(|limit| Box::new(Inflater::new(limit)));
    let socket = WebSocketStream::from_raw_socket(read, Role::Server, Some(config)).await;
    (socket, write)
}
