//! Timer values (RFC 3261 §17, table 4) and the retransmission schedule
//! shared by the four machines. Nothing here reads the clock.

use std::time::{Duration, Instant};

/// The RFC 3261 base timer values every transaction timer is derived from.
///
/// | timer | unreliable transport          | reliable transport |
/// |-------|-------------------------------|--------------------|
/// | A, G  | T1, doubling (G capped at T2) | off                |
/// | E     | T1, doubling capped at T2     | off                |
/// | B,F,H | 64·T1                         | 64·T1              |
/// | D     | max(32 s, 64·T1)              | 0                  |
/// | I, K  | T4                            | 0                  |
/// | J     | 64·T1                         | 0                  |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// Round-trip estimate; the first retransmission interval (default 500 ms).
    pub t1: Duration,
    /// Longest retransmission interval for non-INVITE requests and INVITE
    /// responses (default 4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

impl TimerConfig {
    /// 64·T1: timers B, F, H and (unreliable) J. 32 s with the defaults.
    #[must_use]
    pub fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D on an unreliable transport. RFC 3261 says "at least 32 s";
    /// it must also outlast the server's timer H (64·T1) so that every
    /// retransmitted final response still finds us to ACK it, hence
    /// `max(32 s, 64·T1)`. Exactly 32 s with the defaults.
    #[must_use]
    pub fn timer_d(&self) -> Duration {
        Duration::from_secs(32).max(self.t1x64())
    }
}

/// `now + d`, or `None` (the timer never fires) if the sum does not fit in
/// an `Instant`. Only absurd configured durations get there.
pub(crate) fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// The earlier of two optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Whether an optional deadline has passed at `now`.
pub(crate) fn is_due(at: Option<Instant>, now: Instant) -> bool {
    at.is_some_and(|t| t <= now)
}

/// How the interval grows after each retransmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Growth {
    /// Double every time (timer A).
    Double,
    /// Double, but never beyond this (timers E in Trying, and G: T2).
    DoubleCapped(Duration),
    /// Always this (timer E in Proceeding: T2).
    Fixed(Duration),
}

impl Growth {
    fn next(self, interval: Duration) -> Duration {
        match self {
            Self::Double => interval.saturating_mul(2),
            Self::DoubleCapped(cap) => interval.saturating_mul(2).min(cap),
            Self::Fixed(d) => d,
        }
    }
}

/// A retransmission timer (A, E or G): when it next fires and the interval
/// that led to that instant.
///
/// Deadlines follow the ideal grid (first at `start + T1`, then each one
/// `interval` after the previous *deadline*, not after the late `now` at
/// which the caller got round to it), so a slightly late poll does not
/// shift the schedule. A poll that is later than several deadlines
/// retransmits once and skips the missed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retransmit {
    /// Next firing.
    pub(crate) at: Instant,
    /// Interval between the previous firing (or the start) and `at`.
    pub(crate) interval: Duration,
}

impl Retransmit {
    /// First firing `first` after `now`. `None` if `first` is zero (a zero
    /// interval would retransmit in a tight loop) or overflows.
    pub(crate) fn start(now: Instant, first: Duration) -> Option<Self> {
        if first.is_zero() {
            return None;
        }
        after(now, first).map(|at| Self { at, interval: first })
    }

    /// The schedule after firing at `now`: the first deadline on the grid
    /// that is later than `now`. `None` once the schedule can no longer
    /// advance (zero interval or overflow).
    pub(crate) fn advance(self, now: Instant, growth: Growth) -> Option<Self> {
        let mut r = self;
        while r.at <= now {
            let next = growth.next(r.interval);
            if next.is_zero() {
                return None;
            }
            if next == r.interval {
                // Steady spacing: jump straight past `now`.
                let behind = now.duration_since(r.at).as_nanos();
                let steps = behind / next.as_nanos() + 1;
                let skip = u32::try_from(steps).ok().and_then(|s| next.checked_mul(s))?;
                return after(r.at, skip).map(|at| Self { at, interval: next });
            }
            r = Self { at: after(r.at, next)?, interval: next };
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn defaults_are_rfc_values() {
        let c = TimerConfig::default();
        assert_eq!((c.t1, c.t2, c.t4), (500 * MS, 4000 * MS, 5000 * MS));
        assert_eq!(c.t1x64(), Duration::from_secs(32));
        assert_eq!(c.timer_d(), Duration::from_secs(32));
        let slow = TimerConfig { t1: Duration::from_secs(1), ..c };
        assert_eq!(slow.timer_d(), Duration::from_secs(64));
    }

    #[test]
    fn advance_on_time_and_late() {
        let t0 = Instant::now();
        let r = Retransmit::start(t0, 500 * MS).unwrap();
        let r = r.advance(t0 + 500 * MS, Growth::Double).unwrap();
        assert_eq!((r.at, r.interval), (t0 + 1500 * MS, 1000 * MS));
        // 1.7 s late for the 1.5 s deadline: 3.5 s is still ahead, keep the grid.
        let r = r.advance(t0 + 3200 * MS, Growth::Double).unwrap();
        assert_eq!((r.at, r.interval), (t0 + 3500 * MS, 2000 * MS));
        // Capped growth skips many missed steps at once.
        let r = Retransmit { at: t0 + 7500 * MS, interval: 4000 * MS };
        let r = r.advance(t0 + 100_000 * MS, Growth::DoubleCapped(4000 * MS)).unwrap();
        assert_eq!(r.at, t0 + 103_500 * MS);
        // Not due yet: unchanged.
        assert_eq!(r.advance(t0, Growth::Double), Some(r));
    }

    #[test]
    fn zero_interval_stops() {
        let t0 = Instant::now();
        assert_eq!(Retransmit::start(t0, Duration::ZERO), None);
        let r = Retransmit { at: t0, interval: MS };
        assert_eq!(r.advance(t0, Growth::Fixed(Duration::ZERO)), None);
    }

    #[test]
    fn deadline_helpers() {
        let t0 = Instant::now();
        assert_eq!(earliest(Some(t0 + MS), Some(t0)), Some(t0));
        assert_eq!(earliest(None, Some(t0)), Some(t0));
        assert_eq!(earliest(None, None), None);
        assert!(is_due(Some(t0), t0));
        assert!(!is_due(Some(t0 + MS), t0));
        assert!(!is_due(None, t0));
        assert_eq!(after(t0, Duration::MAX), None);
    }
}
