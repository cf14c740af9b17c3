//! The guard's counters: messages dropped by reason, bans by reason, bans
//! in force. Written by the signaling thread (and by the transport's
//! checks), read by the metrics thread.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::bans::Reason;

/// Why the guard dropped a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Over `requests_per_s`.
    Rate,
    /// Over `invite_per_s`.
    InviteRate,
    /// Over `register_per_s`.
    RegisterRate,
    /// From a banned source.
    Banned,
}

impl DropReason {
    /// Every reason, in metric order.
    pub const ALL: [Self; 4] = [Self::Rate, Self::InviteRate, Self::RegisterRate, Self::Banned];

    /// The metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::InviteRate => "invite_rate",
            Self::RegisterRate => "register_rate",
            Self::Banned => "banned",
        }
    }
}

/// The `sbc_guard_*` series.
#[derive(Debug, Default)]
pub struct GuardMetrics {
    dropped: [AtomicU64; 4],
    bans: [AtomicU64; 6],
    /// Bans in force.
    pub active: AtomicU64,
    /// Sources forgotten to keep the rate table under `max_sources`.
    pub evicted: AtomicU64,
    /// REGISTERs the registrar refused with 403 or 404 (the call layer
    /// counts them; the guard reads the count around each message).
    pub register_refused: AtomicU64,
}

impl GuardMetrics {
    /// Counts a dropped message.
    pub fn dropped(&self, r: DropReason) {
        self.dropped[r as usize].fetch_add(1, Relaxed);
    }

    /// Dropped messages for `r` so far.
    #[must_use]
    pub fn dropped_count(&self, r: DropReason) -> u64 {
        self.dropped[r as usize].load(Relaxed)
    }

    /// Counts a new ban.
    pub fn banned(&self, r: Reason) {
        self.bans[r.index()].fetch_add(1, Relaxed);
    }

    /// Bans for `r` so far.
    #[must_use]
    pub fn bans_count(&self, r: Reason) -> u64 {
        self.bans[r.index()].load(Relaxed)
    }

    /// Appends the Prometheus text.
    pub fn render(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "# HELP sbc_guard_dropped_total SIP messages the guard dropped unanswered, by reason.\n# TYPE sbc_guard_dropped_total counter"
        );
        for r in DropReason::ALL {
            let _ = writeln!(o, "sbc_guard_dropped_total{{reason=\"{}\"}} {}", r.as_str(), self.dropped_count(r));
        }
        let _ = writeln!(o, "# HELP sbc_guard_bans_total Source bans, by reason.\n# TYPE sbc_guard_bans_total counter");
        for r in Reason::ALL {
            let _ = writeln!(o, "sbc_guard_bans_total{{reason=\"{}\"}} {}", r.as_str(), self.bans_count(r));
        }
        let _ = writeln!(
            o,
            "# HELP sbc_guard_bans_active Source bans in force.\n# TYPE sbc_guard_bans_active gauge\nsbc_guard_bans_active {}",
            self.active.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP sbc_guard_sources_evicted_total Sources whose rate state was forgotten to stay under guard.max_sources.\n# TYPE sbc_guard_sources_evicted_total counter\nsbc_guard_sources_evicted_total {}",
            self.evicted.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_reason() {
        let m = GuardMetrics::default();
        m.dropped(DropReason::InviteRate);
        m.banned(Reason::Scanner);
        m.active.store(1, Relaxed);
        let mut o = String::new();
        m.render(&mut o);
        assert!(o.contains("sbc_guard_dropped_total{reason=\"invite_rate\"} 1"), "{o}");
        assert!(o.contains("sbc_guard_dropped_total{reason=\"banned\"} 0"), "{o}");
        assert!(o.contains("sbc_guard_bans_total{reason=\"scanner\"} 1"), "{o}");
        assert!(o.contains("sbc_guard_bans_total{reason=\"media_flood\"} 0"), "{o}");
        assert!(o.contains("sbc_guard_bans_active 1"), "{o}");
    }
}
