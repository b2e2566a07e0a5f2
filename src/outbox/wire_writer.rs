//! Server-to-client WebSocket frames written straight to the socket's write
//! half (RFC 6455 section 5.2: server frames are never masked).
//!
//! The writer task hands a burst of queued frames here; each frame becomes a
//! small header plus its payload, and the whole burst goes out in vectored
//! writes: the payload bytes are the ones the hub encoded once and shared
//! between subscribers, never copied into a per-connection buffer. A
//! connection therefore holds no write buffer between bursts, whatever the
//! size of the largest frame it was ever sent.

use std::io::IoSlice;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Frame opcodes we send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

/// Headers of one burst, back to back, and where each one ends.
#[derive(Default)]
pub struct Burst {
    headers: Vec<u8>,
    ends: Vec<usize>,
    payloads: Vec<Bytes>,
}

impl Burst {
    pub fn push(&mut self, opcode: Opcode, payload: Bytes) {
        self.push_with(0x80 | opcode as u8, payload);
    }

    /// A message compressed by `permessage-deflate`: RSV1 set (RFC 7692
    /// 6), the payload as [`crate::compression::Deflate::compress`] made it.
    pub fn push_compressed(&mut self, opcode: Opcode, payload: Bytes) {
        self.push_with(0x80 | 0x40 | opcode as u8, payload);
    }

    fn push_with(&mut self, first: u8, payload: Bytes) {
        let len = payload.len();
        self.headers.push(first);
        if len < 126 {
            self.headers.push(len as u8);
        } else if len <= u16::MAX as usize {
            self.headers.push(126);
            self.headers.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            self.headers.push(127);
            self.headers.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.ends.push(self.headers.len());
        self.payloads.push(payload);
    }

    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }

    pub fn len(&self) -> usize {
        self.payloads.len()
    }

    /// Writes every frame of the burst, then empties it (keeping no large
    /// allocation: the vectors hold headers and handles only).
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.payloads.len() * 2);
        let mut start = 0;
        for (end, payload) in self.ends.iter().zip(&self.payloads) {
            slices.push(IoSlice::new(&self.headers[start..*end]));
            if !payload.is_empty() {
                slices.push(IoSlice::new(payload));
            }
            start = *end;
        }
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        while !rest.is_empty() {
            let n = io.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        drop(slices);
        io.flush().await?;
        self.clear();
        Ok(())
    }

    /// Gives the vectors' memory back: the writer of a connection that is
    /// not busy (its last burst was a lone frame) holds none while it waits.
    pub fn release(&mut self) {
        *self = Burst::default();
    }

    fn clear(&mut self) {
        self.headers.clear();
        self.ends.clear();
        self.payloads.clear();
        // A burst of thousands of frames must not pin its vectors.
        if self.payloads.capacity() > 256 {
            *self = Burst::default();
        }
    }
}

/// The payload of a close frame: the code, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(reason.as_bytes());
    Bytes::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    /// What a WebSocket client reads from frames written by a burst.
    async fn client_reads(frames: Vec<(Opcode, Bytes)>) -> Vec<Message> {
        let (server, client) = tokio::io::duplex(1 << 20);
        let (_, mut write) = tokio::io::split(server);
        let mut burst = Burst::default();
        for (op, p) in frames {
            burst.push(op, p);
        }
        let n = burst.len();
        burst.write_to(&mut write).await.expect("write");
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(ws.next().await.expect("a frame").expect("a valid frame"));
        }
        out
    }

    #[tokio::test]
    async fn frames_of_every_length_class_reach_a_client_intact_and_in_order() {
        let small = Bytes::from(vec![1u8; 125]);
        let medium = Bytes::from(vec![2u8; 126]);
        let large = Bytes::from(vec![3u8; 70_000]);
        let got = client_reads(vec![
            (Opcode::Binary, small.clone()),
            (Opcode::Text, Bytes::from_static(b"{\"a\":1}")),
            (Opcode::Binary, medium.clone()),
            (Opcode::Binary, large.clone()),
            (Opcode::Ping, Bytes::new()),
            (Opcode::Pong, Bytes::from_static(b"p")),
        ])
        .await;
        assert_eq!(got[0], Message::Binary(small));
        assert_eq!(got[1], Message::Text("{\"a\":1}".into()));
        assert_eq!(got[2], Message::Binary(medium));
        assert_eq!(got[3], Message::Binary(large));
        assert_eq!(got[4], Message::Ping(Bytes::new()));
        assert_eq!(got[5], Message::Pong(Bytes::from_static(b"p")));
    }

    #[tokio::test]
    async fn a_close_frame_carries_its_code_and_reason() {
        let got = client_reads(vec![(Opcode::Close, close_payload(4503, "slow consumer"))]).await;
        match &got[0] {
            Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 4503);
                assert_eq!(f.reason.as_str(), "slow consumer");
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}
