//! CDR spool and forwarder metrics, rendered with the signaling ones.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::spool::SpoolStats;

/// The CDR series. The writer (signaling thread) and the forwarder thread
/// update them; the metrics thread reads them.
#[derive(Debug, Default)]
pub struct CdrMetrics {
    enabled: AtomicBool,
    spool_records: AtomicU64,
    spool_bytes: AtomicU64,
    /// Append time of the oldest unsent CDR, ms since the epoch (0: none).
    oldest_unsent_ms: AtomicU64,
    spool_full: AtomicU64,
    spool_refused: AtomicU64,
    collector_configured: AtomicBool,
    collector_up: AtomicU64,
    forwarded: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

impl CdrMetrics {
    /// Copies the spool's figures (and marks the spool as in use).
    pub fn observe(&self, s: &SpoolStats) {
        self.enabled.store(true, Relaxed);
        self.spool_records.store(s.records, Relaxed);
        self.spool_bytes.store(s.bytes, Relaxed);
        let ms = s.oldest_unsent.map_or(0, |(_, t)| {
            t.duration_since(UNIX_EPOCH).map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
        });
        self.oldest_unsent_ms.store(ms, Relaxed);
    }

    /// Sets the spool-full alarm; returns whether it was already set.
    pub fn set_full(&self, full: bool) -> bool {
        self.spool_full.swap(u64::from(full), Relaxed) == 1
    }

    /// A CDR the spool refused (it went to the JSON-lines file).
    pub fn spool_refused(&self) {
        self.spool_refused.fetch_add(1, Relaxed);
    }

    /// The collector's state.
    pub fn collector_up(&self, up: bool) {
        self.collector_configured.store(true, Relaxed);
        self.collector_up.store(u64::from(up), Relaxed);
    }

    /// CDRs committed to the collector.
    pub fn forwarded(&self, n: u64) {
        self.forwarded.fetch_add(n, Relaxed);
    }

    /// A batch that failed to commit.
    pub fn failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }

    /// Spool records that were not a CDR (not JSON with an id): skipped.
    pub fn skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Relaxed);
    }

    /// CDRs forwarded so far.
    #[must_use]
    pub fn forwarded_count(&self) -> u64 {
        self.forwarded.load(Relaxed)
    }

    /// Prometheus text (nothing when no spool is configured).
    pub fn render(&self, o: &mut String) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        let one = |o: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        one(
            o,
            "sbc_cdr_spool_records",
            "gauge",
            "CDRs in the spool not yet forwarded.",
            self.spool_records.load(Relaxed),
        );
        one(o, "sbc_cdr_spool_bytes", "gauge", "Bytes of the CDR spool on disk.", self.spool_bytes.load(Relaxed));
        let oldest = self.oldest_unsent_ms.load(Relaxed);
        let age = if oldest == 0 {
            0.0
        } else {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
            #[allow(clippy::cast_precision_loss)]
            let a = now.saturating_sub(u128::from(oldest)) as f64 / 1000.0;
            a
        };
        let _ = writeln!(
            o,
            "# HELP sbc_cdr_oldest_unsent_age_seconds Age of the oldest CDR not yet forwarded (0: none).\n\
             # TYPE sbc_cdr_oldest_unsent_age_seconds gauge\nsbc_cdr_oldest_unsent_age_seconds {age:.3}"
        );
        one(
            o,
            "sbc_cdr_spool_full",
            "gauge",
            "1 while the spool is full (CDRs go to the JSON-lines file only).",
            self.spool_full.load(Relaxed),
        );
        one(
            o,
            "sbc_cdr_spool_refused_total",
            "counter",
            "CDRs the spool refused (full or write error), written to JSON lines instead.",
            self.spool_refused.load(Relaxed),
        );
        if !self.collector_configured.load(Relaxed) {
            return;
        }
        one(
            o,
            "sbc_cdr_collector_up",
            "gauge",
            "1 while the PostgreSQL collector is UP.",
            self.collector_up.load(Relaxed),
        );
        one(o, "sbc_cdr_forwarded_total", "counter", "CDRs committed to the collector.", self.forwarded.load(Relaxed));
        one(
            o,
            "sbc_cdr_forward_failures_total",
            "counter",
            "CDR batches that failed to commit (retried).",
            self.failed.load(Relaxed),
        );
        one(
            o,
            "sbc_cdr_skipped_total",
            "counter",
            "Spool records that were not a CDR (skipped).",
            self.skipped.load(Relaxed),
        );
    }

    /// [`render`](Self::render) into a new string.
    #[must_use]
    pub fn render_string(&self) -> String {
        let mut s = String::new();
        self.render(&mut s);
        s
    }
}
