//! The bounded queue between a connection's producers (its session, the
//! hub, presence) and its writer task.
//!
//! A `VecDeque` under a mutex, with two `Notify`s (frames ready, room
//! freed). Unlike a channel it allocates nothing while empty and gives its
//! memory back after a burst, so an idle connection holds only the queue's
//! header; and the writer takes everything waiting in one lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// Capacity kept by a queue emptied by a burst; more is released. A queue
/// emptied by a lone frame keeps nothing: its connection is not busy, and
/// an idle connection then holds only the queue's header.
const KEEP: usize = 16;

pub struct FrameQueue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    ready: Notify,
    room: Notify,
    receiver_gone: AtomicBool,
}

/// Why a push did not queue the item.
#[derive(Debug)]
pub enum PushError<T> {
    Full(T),
    /// The writer is gone.
    Closed(T),
}

impl<T> FrameQueue<T> {
    pub fn new(capacity: usize) -> FrameQueue<T> {
        FrameQueue {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            room: Notify::new(),
            receiver_gone: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        crate::locks::lock(&self.items)
    }

    pub fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        // Checked under the lock: [`FrameQueue::close_receiver`] sets the
        // flag before it takes the lock to drop what is queued, so an item
        // is either refused here or queued before (and dropped with) it,
        // never left behind for a receiver that is gone.
        let mut items = self.lock();
        if self.receiver_gone.load(Ordering::Acquire) {
            return Err(PushError::Closed(item));
        }
        if items.len() >= self.capacity {
            return Err(PushError::Full(item));
        }
        items.push_back(item);
        drop(items);
        self.ready.notify_one();
        Ok(())
    }

    /// Pushes, waiting for room while the queue is full. Returns the item
    /// when the writer is gone.
    pub async fn push(&self, mut item: T) -> Result<(), T> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a pop in between wakes us.
            room.as_mut().enable();
            match self.try_push(item) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed(i)) => return Err(i),
                Err(PushError::Full(i)) => item = i,
            }
            room.await;
        }
    }

    /// Waits until `ready()` holds, checked again each time items are taken
    /// (or the writer goes).
    pub async fn wait_room(&self, ready: impl Fn() -> bool) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if ready() || self.receiver_gone.load(Ordering::Acquire) {
                return;
            }
            room.await;
        }
    }

    /// Moves up to `max` items into `out`, oldest first; 0 when empty.
    pub fn take(&self, max: usize, mut out: impl FnMut(T)) -> usize {
        let mut items = self.lock();
        let n = items.len().min(max);
        for item in items.drain(..n) {
            out(item);
        }
        if items.is_empty() && (items.capacity() > KEEP || n <= 1) {
            *items = VecDeque::new();
        }
        drop(items);
        if n > 0 {
            self.room.notify_waiters();
        }
        n
    }

    /// Resolves once something may have been pushed since the last take.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Wakes the receiver waiting in [`FrameQueue::ready`] without an item
    /// (a [`super::pipe`] whose sender went).
    pub fn wake_receiver(&self) {
        self.ready.notify_one();
    }

    /// The writer ended: later pushes fail, and what was queued is dropped.
    pub fn close_receiver(&self) {
        self.receiver_gone.store(true, Ordering::Release);
        self.lock().clear();
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn drain(q: &FrameQueue<u32>) -> Vec<u32> {
        let mut v = Vec::new();
        q.take(usize::MAX, |i| v.push(i));
        v
    }

    #[test]
    fn items_come_out_in_push_order_and_a_full_queue_refuses() {
        let q = FrameQueue::new(3);
        for i in 0..3 {
            assert!(q.try_push(i).is_ok());
        }
        assert!(matches!(q.try_push(9), Err(PushError::Full(9))));
        assert_eq!(drain(&q), vec![0, 1, 2]);
        assert!(q.try_push(3).is_ok());
        assert_eq!(drain(&q), vec![3]);
    }

    #[test]
    fn an_emptied_queue_gives_its_memory_back() {
        let q = FrameQueue::new(10_000);
        for i in 0..1000 {
            assert!(q.try_push(i).is_ok());
        }
        assert_eq!(drain(&q).len(), 1000);
        assert!(q.lock().capacity() <= KEEP);
    }

    #[test]
    fn a_queue_emptied_by_a_lone_frame_keeps_no_memory() {
        let q = FrameQueue::new(10);
        assert!(q.try_push(1).is_ok());
        assert_eq!(drain(&q), vec![1]);
        assert_eq!(q.lock().capacity(), 0);
    }

    #[test]
    fn a_queue_emptied_by_a_small_burst_keeps_its_memory() {
        let q = FrameQueue::new(10);
        for i in 0..3 {
            assert!(q.try_push(i).is_ok());
        }
        assert_eq!(drain(&q).len(), 3);
        assert!(q.lock().capacity() >= 3);
    }

    #[test]
    fn pushes_fail_once_the_receiver_is_gone() {
        let q = FrameQueue::new(3);
        assert!(q.try_push(1).is_ok());
        q.close_receiver();
        assert!(matches!(q.try_push(2), Err(PushError::Closed(2))));
        assert!(drain(&q).is_empty());
    }

    #[test]
    fn a_push_racing_the_receivers_end_is_refused_or_dropped_never_left_behind() {
        // An item left in the queue after its receiver went is held by the
        // sender (for a polling GET, its answer channel: the GET waits for
        // ever). A thread pushes without pause while the receiver goes:
        // each push must be refused, or queued before the end (and
        // dropped with it).
        let mut left_behind = 0;
        for _ in 0..200 {
            let q = Arc::new(FrameQueue::new(usize::MAX));
            let pusher = {
                let q = q.clone();
                std::thread::spawn(move || while q.try_push(1).is_ok() {})
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while q.lock().is_empty() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the pusher never pushed"
                );
                std::hint::spin_loop();
            }
            q.close_receiver();
            pusher.join().expect("pusher");
            if !q.lock().is_empty() {
                left_behind += 1;
            }
        }
        assert_eq!(left_behind, 0, "pushes queued after the receiver went");
    }

    #[tokio::test]
    async fn a_waiting_push_goes_in_once_the_writer_takes() {
        let q = Arc::new(FrameQueue::new(1));
        assert!(q.try_push(1).is_ok());
        let pusher = {
            let q = q.clone();
            tokio::spawn(async move { q.push(2).await })
        };
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!pusher.is_finished(), "waits while full");
        assert_eq!(drain(&q), vec![1]);
        let pushed = tokio::time::timeout(Duration::from_secs(5), pusher)
            .await
            .expect("the push finishes once there is room")
            .expect("task");
        assert!(pushed.is_ok());
        assert_eq!(drain(&q), vec![2]);
    }

    #[tokio::test]
    async fn a_push_before_the_writer_waits_still_wakes_it() {
        let q = FrameQueue::new(4);
        assert!(q.try_push(1).is_ok());
        tokio::time::timeout(Duration::from_secs(5), q.ready())
            .await
            .expect("the permit of the earlier push wakes the writer");
    }
}
