//! Rate-limited log lines for what a remote party can make happen at
//! will (parse errors, refusals over a limit or cap, failed
//! authentication, ACL denials, transport errors): at most one line per
//! call site per [`WINDOW`], the next one carrying `suppressed=K`, how
//! many similar lines were left out in between.
//!
//! [`warn_limited!`](crate::warn_limited) and
//! [`info_limited!`](crate::info_limited) keep one [`Site`] per call site
//! (a `static`), so a flood of one kind of warning cannot hide another.
//! The limiter takes the time as an argument; only the macros read the
//! clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per call site in this long.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The state of one call site: when its last line went out, and how many
/// were suppressed since.
#[derive(Debug)]
pub struct Site {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Site {
    /// A site that has logged nothing yet.
    #[must_use]
    pub const fn new() -> Self {
        Self { state: Mutex::new((None, 0)) }
    }

    /// Whether a line may go out at `now`: `Some(k)` (log it, saying `k`
    /// similar lines were suppressed before it) or `None` (suppressed,
    /// counted).
    pub fn check(&self, now: Instant, window: Duration) -> Option<u64> {
        let mut g = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, suppressed) = &mut *g;
        if last.is_some_and(|l| now.saturating_duration_since(l) < window) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }
}

impl Default for Site {
    fn default() -> Self {
        Self::new()
    }
}

/// `tracing::warn!`, at most once per call site per [`WINDOW`]; the line
/// after a quiet spell has `suppressed=K`.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static SITE: $crate::logging::Site = $crate::logging::Site::new();
        if let Some(suppressed) = SITE.check(::std::time::Instant::now(), $crate::logging::WINDOW) {
            if suppressed > 0 {
                ::tracing::warn!(suppressed, $($arg)+);
            } else {
                ::tracing::warn!($($arg)+);
            }
        }
    }};
}

/// `tracing::info!`, at most once per call site per [`WINDOW`]; the line
/// after a quiet spell has `suppressed=K`.
#[macro_export]
macro_rules! info_limited {
    ($($arg:tt)+) => {{
        static SITE: $crate::logging::Site = $crate::logging::Site::new();
        if let Some(suppressed) = SITE.check(::std::time::Instant::now(), $crate::logging::WINDOW) {
            if suppressed > 0 {
                ::tracing::info!(suppressed, $($arg)+);
            } else {
                ::tracing::info!($($arg)+);
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_then_the_count() {
        let site = Site::new();
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        assert_eq!(site.check(t0, w), Some(0), "the first line goes out");
        for i in 1..=5 {
            assert_eq!(site.check(t0 + Duration::from_secs(i), w), None, "suppressed within the window");
        }
        assert_eq!(site.check(t0 + Duration::from_secs(10), w), Some(5), "the next says how many were left out");
        assert_eq!(site.check(t0 + Duration::from_secs(11), w), None);
        assert_eq!(site.check(t0 + Duration::from_secs(25), w), Some(1));
        assert_eq!(site.check(t0 + Duration::from_secs(40), w), Some(0), "a quiet spell resets the count");
    }

    #[test]
    fn sites_are_independent() {
        let (a, b) = (Site::new(), Site::new());
        let t0 = Instant::now();
        assert_eq!(a.check(t0, WINDOW), Some(0));
        assert_eq!(b.check(t0, WINDOW), Some(0), "another call site is not held back by the first");
        assert_eq!(a.check(t0, WINDOW), None);
    }

    #[test]
    fn the_macros_expand() {
        for i in 0..3 {
            crate::warn_limited!(i, "a repeated warning");
            crate::info_limited!("a repeated note {i}");
        }
    }
}
