//! The one capped exponential backoff every retry loop uses.
//!
//! A loop that retries something that failed (reaching Redis, a Sentinel,
//! a stream read, a POST to the app) asks its [`Backoff`] for the next
//! delay (or [`Backoff::wait`]s it out, unless shutdown comes first); each
//! delay doubles the previous one up to a cap, and the loop resets it once
//! the thing works again. No jitter: the loops never had any, and they
//! retry against one Redis or one app endpoint per process. A leaf: it
//! names nothing else of the crate.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// First delay of [`Backoff::reconnect`].
pub const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// Longest delay of [`Backoff::reconnect`] (and of the other Redis loops):
/// an outage is noticed within this once Redis answers again.
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Delays that double from `first` up to `max`; one per retry loop, so a
/// new setting of the curve is one constructor call, not a hand-written
/// `(delay * 2).min(..)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays `first`, `2 * first`, ... capped at `max` (`max` below
    /// `first` caps every delay at `first`).
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// 100 ms doubling to 2 s: how the sidecar waits for Redis (and the
    /// Sentinels) to answer at start and after an outage.
    pub const fn reconnect() -> Backoff {
        Backoff::new(RECONNECT_FIRST, RECONNECT_MAX)
    }

    /// The delay to wait now; the one after it doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max).max(self.first);
        delay
    }

    /// Starts the curve again from the first delay (the retried thing
    /// worked).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps the next delay unless `cancel` comes first; false when it
    /// did, so a loop can stop at once on shutdown.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn delays(backoff: &mut Backoff, n: usize) -> Vec<Duration> {
        (0..n).map(|_| backoff.next_delay()).collect()
    }

    #[test]
    fn reconnect_doubles_from_100_ms_and_stays_at_2_s() {
        let mut b = Backoff::reconnect();
        assert_eq!(
            delays(&mut b, 8),
            [100, 200, 400, 800, 1600, 2000, 2000, 2000].map(ms)
        );
    }

    #[test]
    fn a_custom_curve_starts_at_its_first_delay_and_stops_at_its_cap() {
        let mut b = Backoff::new(ms(50), Duration::from_secs(2));
        assert_eq!(
            delays(&mut b, 8),
            [50, 100, 200, 400, 800, 1600, 2000, 2000].map(ms)
        );
    }

    #[test]
    fn reset_starts_the_curve_again_from_the_first_delay() {
        let mut b = Backoff::reconnect();
        delays(&mut b, 4);
        b.reset();
        assert_eq!(delays(&mut b, 3), [100, 200, 400].map(ms));
    }

    #[test]
    fn a_cap_below_the_first_delay_keeps_every_delay_at_the_first() {
        let mut b = Backoff::new(ms(300), ms(100));
        assert_eq!(delays(&mut b, 3), [300, 300, 300].map(ms));
    }

    #[test]
    fn a_huge_cap_never_overflows() {
        let mut b = Backoff::new(Duration::MAX / 2 + ms(1), Duration::MAX);
        delays(&mut b, 2);
        assert_eq!(b.next_delay(), Duration::MAX);
    }

    #[tokio::test]
    async fn wait_returns_false_at_once_when_cancelled() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut b = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        assert!(!b.wait(&cancel).await);
    }

    #[tokio::test]
    async fn wait_returns_true_after_the_delay_and_moves_the_curve_on() {
        let mut b = Backoff::new(ms(1), ms(4));
        assert!(b.wait(&CancellationToken::new()).await);
        assert_eq!(b.next_delay(), ms(2));
    }
}
