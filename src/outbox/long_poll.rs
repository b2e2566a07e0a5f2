//! The writer of a long-polling connection (Engine.IO's `polling`
//! transport): instead of writing frames to a socket, it answers the
//! client's parked `GET` with what is queued, several frames joined by a
//! separator, within the payload bound. A probe (the client trying a
//! WebSocket) answers GETs with a no-op and holds the frames; the upgrade
//! hands the writer the WebSocket's write half, and everything queued from
//! then on goes there, in order.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;

use super::pipe::PipeReceiver;
use super::{Kind, OutboxReceiver};

/// How long a closing connection waits for the client's next GET.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A write half a long-polling connection upgrades to.
pub type Upgraded = Box<dyn AsyncWrite + Send + Unpin>;

/// What the HTTP side asks of the writer.
pub enum PollCmd {
    /// A GET, answered with the body to send.
    Get(oneshot::Sender<Bytes>),
    /// The client probed a WebSocket: answer GETs with a no-op from now on.
    Probe,
    /// The client upgraded: write to this from now on, compressed as the
    /// WebSocket negotiated.
    Upgrade(Upgraded, Option<crate::compression::Deflate>),
    /// The client broke the transport's rules: close the connection.
    Close,
    /// The client closed the session (Engine.IO's `1` in a POST): a parked
    /// GET, and any GET still in flight, is answered with a no-op, as
    /// Engine.IO ends a pending poll; nothing more is sent.
    ClientClosed,
}

/// How a body is made of frames.
#[derive(Clone)]
pub struct PollFormat {
    pub separator: u8,
    /// The answer to a GET while probing or upgrading.
    pub noop: Bytes,
    /// The answer to a GET once the connection closes.
    pub close: Bytes,
    /// Most bytes of one body (one frame always goes, however large).
    pub max_payload: usize,
}

impl OutboxReceiver {
    /// Answers GETs until the connection closes, or runs as a WebSocket
    /// writer after an upgrade.
    pub async fn run_polling(
        mut self,
        mut cmds: PipeReceiver<PollCmd>,
        format: PollFormat,
        write_timeout: Duration,
    ) {
        let mut parked: Option<oneshot::Sender<Bytes>> = None;
        let mut probing = false;
        let mut client_closed = false;
        loop {
            if let Some(get) = parked.take() {
                if probing {
                    let _ = get.send(format.noop.clone());
                } else {
                    match self.take_body(&format) {
                        Some(body) => {
                            let _ = get.send(body);
                        }
                        None => parked = Some(get),
                    }
                }
            }
            let waiting = parked.is_some() && !probing;
            tokio::select! {
                biased;
                _ = self.shared.closing.cancelled() => {
                    let parked = parked.take();
                    // Boxed, as the WebSocket writer below: an idle
                    // session's writer holds only this loop's state.
                    let last = self.last_get(parked, client_closed, &mut cmds, &format, write_timeout);
                    Box::pin(last).await;
                    return;
                }
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(PollCmd::Get(get)) => parked = Some(get),
                    Some(PollCmd::Probe) => probing = true,
                    Some(PollCmd::ClientClosed) => {
                        // Answered like GETs while probing: a no-op at once.
                        client_closed = true;
                        probing = true;
                    }
                    Some(PollCmd::Close) => {
                        let _ = self.shared.close_code.compare_exchange(
                            0,
                            super::CloseCode::ProtocolError.code(),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        self.shared.closing.cancel();
                    }
                    Some(PollCmd::Upgrade(io, deflate)) => {
                        if let Some(get) = parked.take() {
                            let _ = get.send(format.noop.clone());
                        }
                        self.deflate = deflate;
                        return Box::pin(self.run(io, write_timeout)).await;
                    }
                },
                _ = self.shared.queue.ready(), if waiting => {}
            }
        }
    }

    /// Closing: what is queued (but not to a slow consumer) and then the
    /// close packet go to the parked GET, or to the next one if it comes
    /// within [`CLOSE_WAIT`] (a refused CONNECT's answer must reach the
    /// client, whose next GET may not have come yet). When the client
    /// closed, GETs get a no-op instead.
    async fn last_get(
        mut self,
        mut parked: Option<oneshot::Sender<Bytes>>,
        mut client_closed: bool,
        cmds: &mut PipeReceiver<PollCmd>,
        format: &PollFormat,
        write_timeout: Duration,
    ) {
        // Requests already queued come first: the client's close is queued
        // before its session reads it, so a session that ended for it
        // finds it here.
        while let Some(cmd) = cmds.try_recv() {
            match cmd {
                PollCmd::Get(get) => {
                    if let Some(old) = parked.replace(get) {
                        let _ = old.send(format.noop.clone());
                    }
                }
                PollCmd::ClientClosed => client_closed = true,
                PollCmd::Upgrade(io, deflate) => {
                    if let Some(get) = parked.take() {
                        let _ = get.send(format.noop.clone());
                    }
                    self.deflate = deflate;
                    return self.run(io, write_timeout).await;
                }
                PollCmd::Probe | PollCmd::Close => {}
            }
        }
        if client_closed {
            // Engine.IO ends a pending poll with a no-op; so are GETs still
            // in flight (the sid is forgotten: no new one comes, and the
            // channel ends with the last of them).
            if let Some(get) = parked.take() {
                let _ = get.send(format.noop.clone());
            }
            let rest = async {
                while let Some(cmd) = cmds.recv().await {
                    if let PollCmd::Get(get) = cmd {
                        let _ = get.send(format.noop.clone());
                    }
                }
            };
            let _ = tokio::time::timeout(CLOSE_WAIT, rest).await;
            return;
        }
        let next = async {
            loop {
                match cmds.recv().await {
                    Some(PollCmd::Probe | PollCmd::Close | PollCmd::ClientClosed) => {}
                    other => return other,
                }
            }
        };
        let cmd = match parked {
            Some(get) => Some(PollCmd::Get(get)),
            None => tokio::time::timeout(CLOSE_WAIT, next).await.ok().flatten(),
        };
        let get = match cmd {
            Some(PollCmd::Get(get)) => get,
            // The client upgraded meanwhile: the rest and the close go
            // over its WebSocket.
            Some(PollCmd::Upgrade(io, deflate)) => {
                self.deflate = deflate;
                return self.run(io, write_timeout).await;
            }
            _ => return,
        };
        let slow =
            self.shared.close_code.load(Ordering::Acquire) == super::CloseCode::SlowConsumer.code();
        let body = if slow { None } else { self.take_body(format) };
        let body = match body {
            Some(body) => {
                let mut out = BytesMut::from(&body[..]);
                out.extend_from_slice(&[format.separator]);
                out.extend_from_slice(&format.close);
                out.freeze()
            }
            None => format.close.clone(),
        };
        let _ = get.send(body);
    }

    /// What is queued, as one body: frames joined by the separator until
    /// the next would pass `max_payload`; `None` when nothing is queued.
    /// WebSocket control frames have no place here and are dropped.
    fn take_body(&mut self, format: &PollFormat) -> Option<Bytes> {
        let mut body = BytesMut::new();
        let queued = &self.shared.queued;
        let binary = self.shared.framing.get().binary();
        loop {
            let mut next: Option<(Bytes, Option<u64>, bool)> = None;
            let room = body.is_empty();
            let taken = self.shared.queue.take(1, |out| {
                queued.fetch_sub(out.bytes.len(), Ordering::AcqRel);
                match out.kind {
                    Kind::Data => next = Some((out.bytes, out.event_ms, binary)),
                    Kind::Text => next = Some((out.bytes, out.event_ms, false)),
                    Kind::Binary => next = Some((out.bytes, out.event_ms, true)),
                    Kind::Ping | Kind::Pong => {}
                }
            });
            if taken == 0 {
                break;
            }
            let Some((bytes, event_ms, binary)) = next else {
                continue;
            };
            crate::metrics::frame_out(bytes.len(), event_ms);
            if !room {
                body.extend_from_slice(&[format.separator]);
            }
            if binary {
                // Binary packets travel in a text body as `b` + base64.
                use base64::Engine as _;
                body.extend_from_slice(b"b");
                body.extend_from_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(&bytes)
                        .as_bytes(),
                );
            } else {
                body.extend_from_slice(&bytes);
            }
            if body.len() >= format.max_payload {
                break;
            }
        }
        (!body.is_empty()).then(|| body.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::super::outbox;
    use super::*;
    use crate::socketio::framing::SOCKETIO_JSON;

    fn format() -> PollFormat {
        PollFormat {
            separator: 0x1e,
            noop: Bytes::from_static(b"6"),
            close: Bytes::from_static(b"1"),
            max_payload: 1000,
        }
    }

    #[test]
    fn a_binary_frame_goes_into_a_body_as_b_and_base64_beside_text_frames() {
        let (tx, mut rx) = outbox("c".into(), &SOCKETIO_JSON, 8, 1 << 20);
        assert!(tx.push_text(Bytes::from_static(b"4hi")));
        assert!(tx.push_binary(Bytes::from_static(&[1, 2, 3])));
        let body = rx.take_body(&format()).expect("a body");
        assert_eq!(&body[..], b"4hi\x1ebAQID");
        assert!(rx.take_body(&format()).is_none());
    }

    #[tokio::test]
    async fn a_paced_writer_writes_binary_and_text_frames_one_at_a_time() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::protocol::Role;
        use tokio_tungstenite::tungstenite::Message;
        let (tx, rx) = outbox("c".into(), &SOCKETIO_JSON, 8, 1 << 20);
        let rx = rx.pace(Some(Duration::from_millis(1)));
        assert!(tx.push_text(Bytes::from_static(b"4hi")));
        assert!(tx.push_binary(Bytes::from_static(&[1, 2, 3])));
        let (server, client) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(rx.run(server, Duration::from_secs(5)));
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let first = ws.next().await.and_then(Result::ok);
        assert_eq!(first, Some(Message::Text("4hi".into())));
        let second = ws.next().await.and_then(Result::ok);
        assert_eq!(
            second,
            Some(Message::Binary(Bytes::from_static(&[1, 2, 3])))
        );
        tx.close(crate::outbox::CloseCode::Normal);
        let _ = writer.await;
    }
}
