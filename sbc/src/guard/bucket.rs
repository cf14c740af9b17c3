//! The guard's counters, with time passed in: a token bucket (rate
//! limits) and a fixed-window counter (N events within a window).

use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// A token bucket: starts full, refills `per_s` tokens a second up to
/// `burst`; each message takes one.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket for `limit` at `now`.
    #[must_use]
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self { tokens: f64::from(limit.burst), last: now }
    }

    /// Takes a token at `now`: false when the bucket is empty (over the
    /// limit). A limit with `per_s == 0` always allows.
    pub fn take(&mut self, limit: RateLimit, now: Instant) -> bool {
        if limit.per_s == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(limit.per_s)).min(f64::from(limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts events in fixed windows: the count restarts when the window
/// that began with the first event has passed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    start: Option<Instant>,
    count: u32,
}

impl Window {
    /// Counts one event at `now` and returns how many fell in the current
    /// window (this one included).
    pub fn hit(&mut self, window: Duration, now: Instant) -> u32 {
        match self.start {
            Some(s) if now.saturating_duration_since(s) < window => self.count = self.count.saturating_add(1),
            _ => {
                self.start = Some(now);
                self.count = 1;
            }
        }
        self.count
    }

    /// Forgets the events.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Whether nothing counted in a window still open at `now`.
    #[must_use]
    pub fn idle(&self, window: Duration, now: Instant) -> bool {
        self.start.is_none_or(|s| now.saturating_duration_since(s) >= window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let l = RateLimit { per_s: 10, burst: 5 };
        let mut b = Bucket::new(l, t0);
        assert_eq!((0..8).filter(|_| b.take(l, t0)).count(), 5, "the burst, then nothing at the same instant");
        // 10/s: one token per 100 ms.
        assert!(!b.take(l, t0 + Duration::from_millis(50)));
        assert!(b.take(l, t0 + Duration::from_millis(110)));
        assert!(!b.take(l, t0 + Duration::from_millis(120)));
        // A long pause refills to the burst, never past it.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| b.take(l, later)).count(), 5);
        // Over one second at the rate: about 10 pass.
        let start = later + Duration::from_secs(10);
        let mut b = Bucket::new(l, start);
        for _ in 0..5 {
            b.take(l, start);
        }
        let passed = (1..=100).filter(|i| b.take(l, start + Duration::from_millis(10 * i))).count();
        assert!((9..=11).contains(&passed), "{passed}");
    }

    #[test]
    fn zero_rate_is_off_and_time_going_back_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let off = RateLimit { per_s: 0, burst: 0 };
        let mut b = Bucket::new(off, t0);
        assert!((0..1000).all(|_| b.take(off, t0)));
        let l = RateLimit { per_s: 1, burst: 1 };
        let mut b = Bucket::new(l, t0);
        assert!(b.take(l, t0));
        assert!(!b.take(l, t0 - Duration::from_secs(3)), "an earlier time adds no tokens");
    }

    #[test]
    fn window_counts_and_restarts() {
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        let mut c = Window::default();
        assert!(c.idle(w, t0));
        assert_eq!(c.hit(w, t0), 1);
        assert_eq!(c.hit(w, t0 + Duration::from_secs(9)), 2);
        assert!(!c.idle(w, t0 + Duration::from_secs(9)));
        assert_eq!(c.hit(w, t0 + Duration::from_secs(10)), 1, "a new window");
        c.reset();
        assert_eq!(c.hit(w, t0), 1);
    }
}
