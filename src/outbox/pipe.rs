//! A bounded queue with one sender and one receiver, for a long-polling
//! session's two links to its HTTP requests: the client messages its POSTs
//! (and, after an upgrade, its WebSocket) deliver to the session, and the
//! requests its GETs, probe and upgrade make of its writer.
//!
//! Data flow: the HTTP side [`PipeSender::send`]s (waiting for room while
//! the queue is full), the session or writer [`PipeReceiver::recv`]s, in
//! order. The receiver sees the end (`None`) once the sender is dropped and
//! the queue is empty; a send fails once the receiver is dropped.
//!
//! Why not tokio's `mpsc`: each of its channels allocates a block of 32
//! slots and a cache-padded header up front, about 2–3 KiB per channel
//! with these messages, held by every idle polling session. This is a
//! [`FrameQueue`] (a `VecDeque` that holds nothing while empty) and a flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::frame_queue::{FrameQueue, PushError};

struct Shared<T> {
    queue: FrameQueue<T>,
    sender_gone: AtomicBool,
}

/// The sending end (one: a session's link holds it).
pub struct PipeSender<T>(Arc<Shared<T>>);

/// The receiving end.
pub struct PipeReceiver<T>(Arc<Shared<T>>);

/// A pipe of at most `capacity` items waiting.
pub fn pipe<T>(capacity: usize) -> (PipeSender<T>, PipeReceiver<T>) {
    let shared = Arc::new(Shared {
        queue: FrameQueue::new(capacity),
        sender_gone: AtomicBool::new(false),
    });
    (PipeSender(shared.clone()), PipeReceiver(shared))
}

impl<T> PipeSender<T> {
    /// Queues `item`, waiting for room while the pipe is full; gives it
    /// back when the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), T> {
        self.0.queue.push(item).await
    }

    /// Queues `item` if there is room now; gives it back otherwise (full,
    /// or the receiver is gone).
    pub fn try_send(&self, item: T) -> Result<(), T> {
        self.0.queue.try_push(item).map_err(|e| match e {
            PushError::Full(item) | PushError::Closed(item) => item,
        })
    }
}

impl<T> Drop for PipeSender<T> {
    fn drop(&mut self) {
        self.0.sender_gone.store(true, Ordering::Release);
        self.0.queue.wake_receiver();
    }
}

impl<T> PipeReceiver<T> {
    /// The next item; `None` once the sender is gone and nothing is left.
    /// Cancel-safe: an item is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            if self.0.sender_gone.load(Ordering::Acquire) {
                // What was sent before the sender went still comes out.
                return self.try_recv();
            }
            self.0.queue.ready().await;
        }
    }

    /// The next item, if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut next = None;
        self.0.queue.take(1, |item| next = Some(item));
        next
    }
}

impl<T> Drop for PipeReceiver<T> {
    fn drop(&mut self) {
        self.0.queue.close_receiver();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn items_come_out_in_order_then_the_end_once_the_sender_is_gone() {
        let (tx, mut rx) = pipe(4);
        assert!(tx.send(1).await.is_ok());
        assert!(tx.try_send(2).is_ok());
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_an_item_and_for_the_senders_end() {
        let (tx, mut rx) = pipe::<u32>(4);
        let receiver = tokio::spawn(async move {
            let first = rx.recv().await;
            let end = rx.recv().await;
            (first, end)
        });
        tokio::task::yield_now().await;
        assert!(tx.send(7).await.is_ok());
        tokio::task::yield_now().await;
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), receiver)
            .await
            .expect("the receiver wakes")
            .expect("task");
        assert_eq!(got, (Some(7), None));
    }

    #[tokio::test]
    async fn a_full_pipe_refuses_a_try_send_and_a_send_waits_for_room() {
        let (tx, mut rx) = pipe(1);
        assert!(tx.try_send(1).is_ok());
        assert_eq!(tx.try_send(2), Err(2));
        let tx = Arc::new(tx);
        let sender = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(3).await })
        };
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!sender.is_finished(), "waits while full");
        assert_eq!(rx.recv().await, Some(1));
        let sent = tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .expect("the send finishes once there is room")
            .expect("task");
        assert!(sent.is_ok());
        assert_eq!(rx.recv().await, Some(3));
    }

    #[tokio::test]
    async fn sends_fail_once_the_receiver_is_gone() {
        let (tx, rx) = pipe(4);
        drop(rx);
        assert_eq!(tx.send(1).await, Err(1));
        assert_eq!(tx.try_send(2), Err(2));
    }
}
