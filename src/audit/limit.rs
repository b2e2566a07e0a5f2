//! The audit log's rate per source (an address, or a user): a token
//! bucket per source, so a flood of failures from one place is recorded
//! at a bounded rate while others' are not held back.
//!
//! The table is bounded too: at [`Sources::new`]'s `max_sources`, buckets
//! that have refilled (idle sources) are forgotten; if every one is still
//! in use, new sources share one overflow bucket, so a flood from many
//! addresses stays bounded in memory and in entries.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Instant;

/// One source's tokens, refilled continuously up to the burst.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, burst: f64, per_sec: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(burst);
        self.at = now;
    }

    fn take(&mut self, now: Instant, burst: f64, per_sec: f64) -> bool {
        self.refill(now, burst, per_sec);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The buckets of the sources seen lately.
#[derive(Debug)]
pub struct Sources {
    buckets: HashMap<String, Bucket>,
    overflow: Option<Bucket>,
    burst: f64,
    per_sec: f64,
    max_sources: usize,
}

impl Sources {
    /// `per_min` records a minute per source, in bursts of as many.
    pub fn new(per_min: NonZeroU32, max_sources: usize) -> Sources {
        let burst = f64::from(per_min.get());
        Sources {
            buckets: HashMap::new(),
            overflow: None,
            burst,
            per_sec: burst / 60.0,
            max_sources: max_sources.max(1),
        }
    }

    /// Whether `source` may record one more now (and takes its token).
    pub fn allow(&mut self, source: &str, now: Instant) -> bool {
        let (burst, per_sec) = (self.burst, self.per_sec);
        if !self.buckets.contains_key(source) && self.buckets.len() >= self.max_sources {
            self.forget_idle(now);
        }
        if let Some(bucket) = self.buckets.get_mut(source) {
            return bucket.take(now, burst, per_sec);
        }
        if self.buckets.len() < self.max_sources {
            let mut bucket = Bucket::full(burst, now);
            let allowed = bucket.take(now, burst, per_sec);
            self.buckets.insert(source.to_owned(), bucket);
            return allowed;
        }
        self.overflow
            .get_or_insert_with(|| Bucket::full(burst, now))
            .take(now, burst, per_sec)
    }

    /// Forgets the sources whose bucket is full again: forgetting them
    /// changes nothing (a new bucket starts full).
    fn forget_idle(&mut self, now: Instant) {
        let (burst, per_sec) = (self.burst, self.per_sec);
        self.buckets.retain(|_, b| {
            b.refill(now, burst, per_sec);
            b.tokens < burst
        });
    }

    /// Sources tracked one by one now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sources(per_min: u32, max: usize) -> Sources {
        Sources::new(NonZeroU32::new(per_min).unwrap_or(NonZeroU32::MIN), max)
    }

    #[test]
    fn a_source_gets_its_burst_then_one_per_interval() {
        let mut s = sources(60, 10);
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| s.allow("a", t0)).count();
        assert_eq!(allowed, 60);
        assert!(s.allow("a", t0 + Duration::from_secs(1)));
        assert!(!s.allow("a", t0 + Duration::from_secs(1)));
    }

    #[test]
    fn one_sources_flood_does_not_hold_back_another() {
        let mut s = sources(2, 10);
        let t0 = Instant::now();
        for _ in 0..10 {
            s.allow("a", t0);
        }
        assert!(s.allow("b", t0));
    }

    #[test]
    fn past_the_table_bound_new_sources_share_one_bucket() {
        let mut s = sources(2, 2);
        let t0 = Instant::now();
        assert!(s.allow("a", t0));
        assert!(s.allow("b", t0));
        let allowed = (0..50)
            .filter(|i| s.allow(&format!("spray{i}"), t0))
            .count();
        assert_eq!(allowed, 2);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn idle_sources_are_forgotten_to_make_room() {
        let mut s = sources(60, 1);
        let t0 = Instant::now();
        assert!(s.allow("a", t0));
        assert!(s.allow("b", t0 + Duration::from_secs(5)));
        assert_eq!(s.len(), 1);
    }
}
