//! Per-connection rate limit: a token bucket of `RTS_RATE_LIMIT` messages
//! per second with a burst of twice that. A message over the limit is
//! answered `rate_limited`; a connection that keeps going over it (more
//! rejections in a window than its burst) is closed with 4429.

use std::time::Duration;

use tokio::time::Instant;

/// How long rejections are counted before the count starts again.
const ABUSE_WINDOW: Duration = Duration::from_secs(10);

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    rejected: u64,
    window_start: Instant,
}

/// What to do with one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Reject,
    /// Sustained abuse: close the connection.
    Close,
}

impl RateLimiter {
    pub fn new(per_second: u32, now: Instant) -> RateLimiter {
        let rate = f64::from(per_second.max(1));
        RateLimiter {
            rate,
            burst: 2.0 * rate,
            tokens: 2.0 * rate,
            last: now,
            rejected: 0,
            window_start: now,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window_start) > ABUSE_WINDOW {
            self.window_start = now;
            self.rejected = 0;
        }
        self.rejected += 1;
        if self.rejected as f64 > self.burst {
            Verdict::Close
        } else {
            Verdict::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_of_twice_the_rate_then_rejects() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, t0);
        for _ in 0..20 {
            assert_eq!(r.check(t0), Verdict::Allow);
        }
        assert_eq!(r.check(t0), Verdict::Reject);
    }

    #[test]
    fn refills_at_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, t0);
        for _ in 0..20 {
            r.check(t0);
        }
        let later = t0 + Duration::from_millis(500);
        for _ in 0..5 {
            assert_eq!(r.check(later), Verdict::Allow);
        }
        assert_eq!(r.check(later), Verdict::Reject);
    }

    #[test]
    fn sustained_abuse_closes() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, t0);
        let mut verdicts = Vec::new();
        for _ in 0..100 {
            verdicts.push(r.check(t0));
        }
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Allow).count(),
            20
        );
        assert_eq!(verdicts.last(), Some(&Verdict::Close));
    }
}
