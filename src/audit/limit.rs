//! The audit log's rate per source (an address, or a user): a token
//! bucket per source, so a flood of failures from one place is recorded
//! at a bounded rate while others' are not held back.
//!
//! The table is bounded too: at [`Sources::new`]'s `max_sources`, buckets
//! that have refilled (idle sources) are forgotten; if every one is still
//! in use, new sources share one overflow bucket, so a flood from many
//! addresses stays bounded in memory and in entries. And all sources
//! together record at most [`ALL_SOURCES`] sources' worth (one shared
//! bucket every record also takes from), so a flood spread over many
//! addresses (an IPv6 range) or many users grows the audit stream no
//! faster than that, however many sources it uses. Idle buckets are swept
//! at most once a [`SWEEP`] interval, so a spray of new sources costs no
//! scan of the table per record.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// How many sources' rate all sources of a sidecar share: past it, records
/// are dropped (counted) whatever their source.
pub const ALL_SOURCES: u32 = 16;

/// The least time between two sweeps of idle buckets.
pub const SWEEP: Duration = Duration::from_secs(1);

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
    /// Every source's records also take from it (see [`ALL_SOURCES`]).
    all: Option<Bucket>,
    /// When idle buckets were last swept.
    swept: Option<Instant>,
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
            all: None,
            swept: None,
            burst,
            per_sec: burst / 60.0,
            max_sources: max_sources.max(1),
        }
    }

    /// Whether `source` may record one more now (and takes its token),
    /// within the share of all sources.
    pub fn allow(&mut self, source: &str, now: Instant) -> bool {
        if !self.allow_source(source, now) {
            return false;
        }
        let share = f64::from(ALL_SOURCES);
        let (burst, per_sec) = (self.burst * share, self.per_sec * share);
        self.all
            .get_or_insert_with(|| Bucket::full(burst, now))
            .take(now, burst, per_sec)
    }

    /// Whether `source`'s own bucket (or the overflow) has a token.
    fn allow_source(&mut self, source: &str, now: Instant) -> bool {
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
        if self
            .swept
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP)
        {
            return;
        }
        self.swept = Some(now);
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

    #[test]
    fn all_sources_together_get_the_share_of_all_sources() {
        let mut s = sources(1, 1000);
        let t0 = Instant::now();
        let allowed = (0..500).filter(|i| s.allow(&format!("u{i}"), t0)).count();
        assert_eq!(allowed, ALL_SOURCES as usize);
    }

    #[test]
    fn a_spray_of_new_sources_sweeps_the_table_at_most_once_an_interval() {
        let mut s = sources(60, 1);
        let t0 = Instant::now();
        assert!(s.allow("a", t0));
        let later = t0 + Duration::from_secs(5);
        assert!(s.allow("b", later), "the sweep forgot a");
        assert!(
            s.allow("c", later + Duration::from_millis(10)),
            "c shares the overflow"
        );
        assert_eq!(s.len(), 1, "b is kept until the next sweep");
    }
}
