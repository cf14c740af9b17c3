//! Call health per trunk: attempts, answers, ASR, NER, ACD, post-dial
//! delay and MOS histograms, one-way audio, in Prometheus text.
//!
//! Labels are trunk names only (never numbers or call ids). Written by the
//! call layer's thread with relaxed atomic adds; read by the metrics
//! listener. Definitions:
//!
//! - an *attempt* is an INVITE tried on the trunk that ended in an answer,
//!   a final failure response or a timeout (skipped trunks are not
//!   attempts);
//! - ASR = answers / attempts;
//! - NER (ITU-T E.425 network effectiveness) = attempts that the network
//!   completed / attempts: answers, and the user's own refusals and
//!   silences: 486 Busy Here, 600 Busy Everywhere, 480 Temporarily
//!   Unavailable (no answer), 603 Decline, and 487 (the caller gave up
//!   while it rang);
//! - ACD = total duration of answered calls / answered calls ended.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

/// Upper bounds of the MOS histogram's buckets.
pub const MOS_BUCKETS: [f64; 8] = [1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.1, 4.5];

/// Final responses that count as network-effective besides answers.
pub const NER_CODES: [u16; 5] = [486, 600, 480, 603, 487];

/// A fixed-bucket histogram of non-negative values.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), then the overflow bucket.
    counts: Vec<AtomicU64>,
    /// Sum in millionths.
    sum_micro: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these bucket bounds.
    #[must_use]
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_micro: AtomicU64::new(0) }
    }

    /// Records `v` (negative or NaN values are recorded as 0).
    pub fn observe(&self, v: f64) {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.sum_micro.fetch_add((v * 1e6) as u64, Relaxed);
    }

    /// Observations so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn render(&self, o: &mut String, name: &str, trunk: &str) {
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Relaxed);
            let _ = writeln!(o, "{name}_bucket{{trunk=\"{trunk}\",le=\"{b}\"}} {cum}");
        }
        cum += self.counts.last().map_or(0, |c| c.load(Relaxed));
        let _ = writeln!(o, "{name}_bucket{{trunk=\"{trunk}\",le=\"+Inf\"}} {cum}");
        let _ = writeln!(o, "{name}_sum{{trunk=\"{trunk}\"}} {}", self.sum_micro.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(o, "{name}_count{{trunk=\"{trunk}\"}} {cum}");
    }
}

/// One trunk's health series.
#[derive(Debug)]
pub struct TrunkHealth {
    name: String,
    attempts: AtomicU64,
    answers: AtomicU64,
    effective: AtomicU64,
    ended_answered: AtomicU64,
    duration_ms: AtomicU64,
    one_way: AtomicU64,
    media_timeouts: AtomicU64,
    /// Post-dial delay, seconds.
    pub pdd: Histogram,
    /// Mean MOS of each scored direction of each ended call.
    pub mos: Histogram,
}

/// Every trunk's health series, in config order. A configuration reload
/// appends the trunks it adds ([`CallHealth::push`]); indices never change.
#[derive(Debug, Default)]
pub struct CallHealth {
    trunks: RwLock<Vec<Arc<TrunkHealth>>>,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl CallHealth {
    /// Series for these trunks.
    #[must_use]
    pub fn new(names: &[String]) -> Self {
        let h = Self::default();
        for n in names {
            h.push(n);
        }
        h
    }

    /// Series for one more trunk (a reload added it), at the next index.
    pub fn push(&self, name: &str) {
        let t = TrunkHealth {
            name: name.to_owned(),
            attempts: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            effective: AtomicU64::new(0),
            ended_answered: AtomicU64::new(0),
            duration_ms: AtomicU64::new(0),
            one_way: AtomicU64::new(0),
            media_timeouts: AtomicU64::new(0),
            pdd: Histogram::new(&crate::metrics::PDD_BUCKETS),
            mos: Histogram::new(&MOS_BUCKETS),
        };
        self.trunks.write().unwrap_or_else(PoisonError::into_inner).push(Arc::new(t));
    }

    fn all(&self) -> Vec<Arc<TrunkHealth>> {
        self.trunks.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Trunk `i`'s series.
    #[must_use]
    pub fn trunk(&self, i: usize) -> Option<Arc<TrunkHealth>> {
        self.trunks.read().unwrap_or_else(PoisonError::into_inner).get(i).cloned()
    }

    /// An attempt on trunk `i` ended with final `code` (2xx: answered;
    /// 0: timed out).
    pub fn attempt(&self, i: usize, code: u16) {
        let Some(t) = self.trunk(i) else { return };
        t.attempts.fetch_add(1, Relaxed);
        if (200..300).contains(&code) {
            t.answers.fetch_add(1, Relaxed);
            t.effective.fetch_add(1, Relaxed);
        } else if NER_CODES.contains(&code) {
            t.effective.fetch_add(1, Relaxed);
        }
    }

    /// A post-dial delay on trunk `i`.
    pub fn pdd(&self, i: usize, secs: f64) {
        if let Some(t) = self.trunk(i) {
            t.pdd.observe(secs);
        }
    }

    /// An answered call on trunk `i` ended after `secs`.
    pub fn answered_call_ended(&self, i: usize, secs: f64) {
        if let Some(t) = self.trunk(i) {
            t.ended_answered.fetch_add(1, Relaxed);
            t.duration_ms.fetch_add((secs.max(0.0) * 1000.0) as u64, Relaxed);
        }
    }

    /// A direction's mean MOS of a call on trunk `i`.
    pub fn mos(&self, i: usize, mos: f64) {
        if let Some(t) = self.trunk(i) {
            t.mos.observe(mos);
        }
    }

    /// A call on trunk `i` flagged with one-way audio.
    pub fn one_way(&self, i: usize) {
        if let Some(t) = self.trunk(i) {
            t.one_way.fetch_add(1, Relaxed);
        }
    }

    /// A call on trunk `i` ended for lack of media.
    pub fn media_timeout(&self, i: usize) {
        if let Some(t) = self.trunk(i) {
            t.media_timeouts.fetch_add(1, Relaxed);
        }
    }

    /// One-way audio flags on trunk `i` so far.
    #[must_use]
    pub fn one_way_count(&self, i: usize) -> u64 {
        self.trunk(i).map_or(0, |t| t.one_way.load(Relaxed))
    }

    /// Appends the series in Prometheus text format.
    pub fn render(&self, o: &mut String) {
        let trunks = self.all();
        if trunks.is_empty() {
            return;
        }
        type Get = fn(&TrunkHealth) -> String;
        let scalars: [(&str, &str, &str, Get); 8] = [
            ("sbc_trunk_call_attempts_total", "counter", "INVITEs tried on the trunk that ended (answer, failure or timeout).", |t| t.attempts.load(Relaxed).to_string()),
            ("sbc_trunk_answers_total", "counter", "Attempts the trunk answered (2xx).", |t| t.answers.load(Relaxed).to_string()),
            ("sbc_trunk_asr", "gauge", "Answer-seizure ratio on the trunk: answers / attempts.", |t| ratio(t.answers.load(Relaxed), t.attempts.load(Relaxed)).to_string()),
            ("sbc_trunk_ner", "gauge", "Network effectiveness ratio: attempts answered or refused by the user (486, 600, 480, 603, 487) / attempts.", |t| ratio(t.effective.load(Relaxed), t.attempts.load(Relaxed)).to_string()),
            ("sbc_trunk_acd_seconds", "gauge", "Average duration of the trunk's answered calls that ended.", |t| (ratio(t.duration_ms.load(Relaxed), t.ended_answered.load(Relaxed)) / 1000.0).to_string()),
            ("sbc_trunk_answered_call_seconds_total", "counter", "Total duration of the trunk's answered calls that ended.", |t| (t.duration_ms.load(Relaxed) as f64 / 1000.0).to_string()),
            ("sbc_one_way_audio_total", "counter", "Answered calls flagged with one-way audio (media one way only for relay.one_way_after_s), by trunk.", |t| t.one_way.load(Relaxed).to_string()),
            ("sbc_media_timeout_total", "counter", "Answered calls ended with BYE after sip.media_timeout_s without media, by trunk.", |t| t.media_timeouts.load(Relaxed).to_string()),
        ];
        for (name, kind, help, get) in scalars {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for t in &trunks {
                let _ = writeln!(o, "{name}{{trunk=\"{}\"}} {}", t.name, get(t));
            }
        }
        let _ = writeln!(o, "# HELP sbc_trunk_post_dial_delay_seconds INVITE to first ringing or answer, by trunk.\n# TYPE sbc_trunk_post_dial_delay_seconds histogram");
        for t in &trunks {
            t.pdd.render(o, "sbc_trunk_post_dial_delay_seconds", &t.name);
        }
        let _ = writeln!(o, "# HELP sbc_trunk_mos Mean MOS (ITU-T G.107 E-model) of each direction of ended calls, by trunk.\n# TYPE sbc_trunk_mos histogram");
        for t in &trunks {
            t.mos.render(o, "sbc_trunk_mos", &t.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_histograms_render_by_trunk() {
        let h = CallHealth::new(&["carrier-a".to_owned(), "carrier-b".to_owned()]);
        h.attempt(0, 200);
        h.attempt(0, 486);
        h.attempt(0, 503);
        h.attempt(0, 0);
        h.answered_call_ended(0, 30.0);
        h.answered_call_ended(0, 90.0);
        h.mos(0, 4.3);
        h.mos(0, 2.2);
        h.pdd(0, 0.3);
        h.one_way(0);
        h.attempt(7, 200);
        let mut o = String::new();
        h.render(&mut o);
        for line in [
            "sbc_trunk_call_attempts_total{trunk=\"carrier-a\"} 4",
            "sbc_trunk_answers_total{trunk=\"carrier-a\"} 1",
            "sbc_trunk_asr{trunk=\"carrier-a\"} 0.25",
            "sbc_trunk_ner{trunk=\"carrier-a\"} 0.5",
            "sbc_trunk_acd_seconds{trunk=\"carrier-a\"} 60",
            "sbc_one_way_audio_total{trunk=\"carrier-a\"} 1",
            "sbc_one_way_audio_total{trunk=\"carrier-b\"} 0",
            "sbc_trunk_asr{trunk=\"carrier-b\"} 0",
            "sbc_trunk_mos_bucket{trunk=\"carrier-a\",le=\"2.5\"} 1",
            "sbc_trunk_mos_bucket{trunk=\"carrier-a\",le=\"4.1\"} 1",
            "sbc_trunk_mos_bucket{trunk=\"carrier-a\",le=\"4.5\"} 2",
            "sbc_trunk_mos_count{trunk=\"carrier-a\"} 2",
            "sbc_trunk_post_dial_delay_seconds_bucket{trunk=\"carrier-a\",le=\"0.25\"} 0",
            "sbc_trunk_post_dial_delay_seconds_bucket{trunk=\"carrier-a\",le=\"0.5\"} 1",
        ] {
            assert!(o.lines().any(|l| l == line), "missing `{line}` in\n{o}");
        }
        assert!(o.contains("sbc_trunk_mos_sum{trunk=\"carrier-a\"} 6.5"), "{o}");
    }
}
