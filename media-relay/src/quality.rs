//! Call quality: the ITU-T G.107 E-model (R factor and MOS) from loss,
//! delay and codec, and the per-direction tracker the control plane feeds
//! every interval from the workers' published counters.
//!
//! Nothing here runs on the packet path: the control plane calls
//! [`QualityTracker::tick`] from its housekeeping pass with the snapshots
//! the workers already publish, and `now` as an argument.
//!
//! # The model (see `docs/quality.md`)
//!
//! `R = R0 - Id - Ie_eff` with `R0 = 93.2` (G.107's `Ro - Is - A` at the
//! default parameters; advantage factor `A = 0`).
//! - `Id`, the delay impairment, from the one-way mouth-to-ear delay `d`
//!   (ms) with the Cole and Rosenbluth fit of G.107 at its defaults
//!   ("Voice over IP performance monitoring", ACM CCR 31(2), 2001):
//!   `Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)`.
//! - `d = RTT / 2 + 2 * jitter + packetization`: half the round trip, a
//!   jitter buffer of twice the interarrival jitter, and one frame.
//! - `Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)` (G.107 §7.4),
//!   with `Ie` and `Bpl` per codec from G.113 Appendix I ([`codec`]).
//! - `BurstR = 1 / (p + q)` (G.107 §7.4, the two-state Markov model of
//!   loss) from the interval's counts: `p = E / R` (a received packet
//!   followed by a loss), `q = E / L` (a lost packet followed by a
//!   received one), with `E` loss events (gaps in the sequence), `L` lost
//!   and `R` received packets; 1 (random) when there was no loss, and
//!   never below 1. The worker counts a loss event as one add when an
//!   in-order packet skips sequence numbers.
//! - `MOS = 1 + 0.035 R + R (R - 60) (100 - R) 7e-6`, `R` clamped to
//!   `0..=100` (G.107 Annex B).

use crate::Nanos;

/// G.107's `Ro - Is` at the default parameters.
pub const R0: f64 = 93.2;

/// E-model figures of a codec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Codec {
    /// Equipment impairment factor `Ie`.
    pub ie: f64,
    /// Packet-loss robustness factor `Bpl`.
    pub bpl: f64,
    /// Packetization assumed, ms (one frame of delay).
    pub frame_ms: f64,
}

/// G.711 with packet loss concealment (G.711 Appendix I), G.113 Appendix I:
/// `Ie = 0`, `Bpl = 25.1`. Without PLC G.113 gives `Bpl = 4.3`; endpoints
/// today conceal loss, so the PLC figure is the default.
pub const G711: Codec = Codec { ie: 0.0, bpl: 25.1, frame_ms: 20.0 };
/// G.729A + VAD, G.113 Appendix I: `Ie = 11`, `Bpl = 19`.
pub const G729: Codec = Codec { ie: 11.0, bpl: 19.0, frame_ms: 20.0 };
/// G.723.1 (6.3 kbit/s), G.113 Appendix I: `Ie = 15`, `Bpl = 16.1`.
pub const G723: Codec = Codec { ie: 15.0, bpl: 16.1, frame_ms: 30.0 };

/// The E-model figures for an SDP codec name (`PCMU/8000`, `opus/48000/2`).
///
/// - PCMU, PCMA: [`G711`].
/// - G729: [`G729`]; G723: [`G723`].
/// - G722: scored on the narrowband scale as G.711 (`Ie = 0`, `Bpl = 25.1`);
///   the wideband E-model (G.107.1) is not used.
/// - opus: no ITU-T figure exists; assumed as good as G.711 with PLC
///   (`Ie = 0`, `Bpl = 25.1`), which understates Opus's own concealment.
/// - anything else (telephone-event included): G.711's figures.
#[must_use]
pub fn codec(name: &str) -> Codec {
    let enc = name.split('/').next().unwrap_or_default();
    if enc.eq_ignore_ascii_case("G729") {
        G729
    } else if enc.eq_ignore_ascii_case("G723") {
        G723
    } else {
        G711
    }
}

/// Effective equipment impairment for `ppl` percent loss (G.107 §7.4).
#[must_use]
pub fn ie_eff(c: &Codec, ppl: f64, burst_r: f64) -> f64 {
    let ppl = ppl.clamp(0.0, 100.0);
    let burst_r = if burst_r.is_finite() && burst_r >= 1.0 { burst_r } else { 1.0 };
    let denom = ppl / burst_r + c.bpl;
    if denom <= 0.0 {
        return c.ie;
    }
    c.ie + (95.0 - c.ie) * ppl / denom
}

/// Delay impairment `Id` for a one-way delay of `d` ms (Cole and
/// Rosenbluth's fit of G.107 at the default parameters).
#[must_use]
pub fn delay_impairment(d: f64) -> f64 {
    let d = if d.is_finite() { d.max(0.0) } else { 0.0 };
    0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 }
}

/// The one-way delay the model is fed: `rtt / 2 + 2 * jitter + frame`, ms.
#[must_use]
pub fn one_way_delay(rtt_ms: f64, jitter_ms: f64, frame_ms: f64) -> f64 {
    rtt_ms.max(0.0) / 2.0 + 2.0 * jitter_ms.max(0.0) + frame_ms.max(0.0)
}

/// The R factor.
#[must_use]
pub fn r_factor(c: &Codec, ppl: f64, burst_r: f64, delay_ms: f64) -> f64 {
    R0 - delay_impairment(delay_ms) - ie_eff(c, ppl, burst_r)
}

/// MOS (CQE) from R (G.107 Annex B).
#[must_use]
pub fn mos(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        return 1.0;
    }
    if r >= 100.0 {
        return 4.5;
    }
    1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
}

/// What one interval of one direction measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Packets expected in the interval (relay's view).
    pub expected: u64,
    /// Packets lost in the interval (relay's view; negative = duplicates).
    pub lost: i64,
    /// Loss the receiving endpoint reported in its last RTCP report, in
    /// 1/256 (0 without one).
    pub reported_fraction: u8,
    /// Interarrival jitter, ms: the larger of the relay's and the
    /// receiving endpoint's report.
    pub jitter_ms: f64,
    /// Round trip through the relay, ms, when RTCP gave one.
    pub rtt_ms: Option<f64>,
    /// Loss events (gaps) in the interval, relay's view.
    pub loss_events: u64,
}

impl Sample {
    /// Loss percent for the model: the relay's interval loss or the
    /// receiver's reported fraction, whichever is larger (the receiver
    /// also sees the loss between the relay and itself).
    #[must_use]
    pub fn loss_pct(&self) -> f64 {
        let relay =
            if self.expected == 0 || self.lost <= 0 { 0.0 } else { 100.0 * self.lost as f64 / self.expected as f64 };
        relay.max(100.0 * f64::from(self.reported_fraction) / 256.0).min(100.0)
    }

    /// `BurstR` of the interval's loss (see the module docs): 1 for random
    /// loss or none, more for loss in bursts.
    #[must_use]
    pub fn burst_r(&self) -> f64 {
        let lost = u64::try_from(self.lost).unwrap_or(0);
        let received = self.expected.saturating_sub(lost);
        if self.loss_events == 0 || lost == 0 || received == 0 {
            return 1.0;
        }
        let e = self.loss_events as f64;
        let (p, q) = (e / received as f64, e / lost as f64);
        (1.0 / (p + q)).max(1.0)
    }

    /// The interval's MOS with codec `c`.
    #[must_use]
    pub fn mos(&self, c: &Codec) -> f64 {
        let d = one_way_delay(self.rtt_ms.unwrap_or(0.0), self.jitter_ms, c.frame_ms);
        mos(r_factor(c, self.loss_pct(), self.burst_r(), d))
    }
}

/// One direction's quality over a call: interval MOS, its minimum and mean.
/// Owned by the control plane (under the relay's lock).
#[derive(Debug, Clone, Default)]
pub struct QualityTracker {
    /// Start of the current interval; 0 before the first tick.
    since: Nanos,
    /// `expected`, `lost`, `rtp_packets` and `loss_events` at `since`.
    base: (u64, i64, u64, u64),
    /// Scored intervals.
    pub intervals: u32,
    /// Last interval's MOS; 0 before the first.
    pub last: f64,
    /// Lowest interval MOS; 0 before the first.
    pub min: f64,
    /// Sum of interval MOS (for the mean).
    sum: f64,
    /// Highest jitter seen at a tick, ms.
    pub jitter_max_ms: f64,
    /// Last interval's loss, percent.
    pub loss_pct: f64,
}

impl QualityTracker {
    /// Scores an interval when `interval` has passed since the last one.
    /// `counts` are the direction's cumulative `expected`, `lost`,
    /// `rtp_packets` and `loss_events`; `sample` carries the rest (its counts are filled here). An
    /// interval without RTP is not scored (silence, hold, or no media yet).
    /// Returns the interval's MOS when one was scored.
    pub fn tick(
        &mut self,
        now: Nanos,
        interval: Nanos,
        counts: (u64, i64, u64, u64),
        mut sample: Sample,
        c: &Codec,
    ) -> Option<f64> {
        if sample.jitter_ms > self.jitter_max_ms && counts.2 > 0 {
            self.jitter_max_ms = sample.jitter_ms;
        }
        if self.since == 0 {
            self.since = now.max(1);
            self.base = counts;
            return None;
        }
        if now.saturating_sub(self.since) < interval {
            return None;
        }
        let (e0, l0, p0, g0) = self.base;
        self.since = now;
        self.base = counts;
        if counts.2 <= p0 {
            return None;
        }
        sample.expected = counts.0.saturating_sub(e0);
        sample.lost = counts.1.saturating_sub(l0);
        sample.loss_events = counts.3.saturating_sub(g0);
        let m = sample.mos(c);
        self.loss_pct = sample.loss_pct();
        self.intervals += 1;
        self.last = m;
        self.min = if self.intervals == 1 { m } else { self.min.min(m) };
        self.sum += m;
        Some(m)
    }

    /// Whether a [`tick`](Self::tick) at `now` would end an interval (or
    /// set the first base): callers skip reading the inputs otherwise.
    #[must_use]
    pub fn due(&self, now: Nanos, interval: Nanos) -> bool {
        self.since == 0 || now.saturating_sub(self.since) >= interval
    }

    /// Mean interval MOS; 0 before the first.
    #[must_use]
    pub fn mean(&self) -> f64 {
        if self.intervals == 0 {
            0.0
        } else {
            self.sum / f64::from(self.intervals)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tolerance for published reference points quoted to two decimals.
    const TOL: f64 = 0.01;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn mos_reference_points() {
        // G.107 Annex B: R 93.2 (the default connection) -> MOS 4.41.
        assert!(close(mos(R0), 4.41, TOL), "{}", mos(R0));
        // R = 50 -> 2.58 (G.107 Figure B.1 "nearly all users dissatisfied" edge).
        assert!(close(mos(50.0), 2.58, TOL), "{}", mos(50.0));
        // R = 80 -> 4.02, R = 70 -> 3.60, R = 60 -> 3.10 (G.107 Table B.1 bands).
        assert!(close(mos(80.0), 4.02, TOL), "{}", mos(80.0));
        assert!(close(mos(70.0), 3.60, TOL), "{}", mos(70.0));
        assert!(close(mos(60.0), 3.10, TOL), "{}", mos(60.0));
        assert_eq!(mos(-5.0), 1.0);
        assert_eq!(mos(0.0), 1.0);
        assert_eq!(mos(120.0), 4.5);
        assert_eq!(mos(f64::NAN), 1.0);
    }

    #[test]
    fn ie_eff_matches_g107_formula() {
        let no_plc = Codec { ie: 0.0, bpl: 4.3, frame_ms: 20.0 };
        // 1 % random loss, Bpl 4.3: 95 * 1 / 5.3 = 17.92.
        assert!(close(ie_eff(&no_plc, 1.0, 1.0), 17.92, TOL), "{}", ie_eff(&no_plc, 1.0, 1.0));
        // With PLC (Bpl 25.1): 95 / 26.1 = 3.64.
        assert!(close(ie_eff(&G711, 1.0, 1.0), 3.64, TOL));
        // G.729: 11 + 84 * 2 / 21 = 19.0 at 2 %.
        assert!(close(ie_eff(&G729, 2.0, 1.0), 19.0, TOL));
        // No loss: Ie.
        assert_eq!(ie_eff(&G729, 0.0, 1.0), 11.0);
        // Burstier loss (BurstR 2) hurts more than random loss.
        assert!(ie_eff(&G711, 5.0, 2.0) > ie_eff(&G711, 5.0, 1.0));
        // Out-of-range inputs are clamped, never NaN.
        assert!(ie_eff(&G711, 500.0, f64::NAN).is_finite());
    }

    #[test]
    fn delay_impairment_fit() {
        assert_eq!(delay_impairment(0.0), 0.0);
        assert!(close(delay_impairment(100.0), 2.4, 1e-9));
        // Past 177.3 ms the slope rises: 0.024*300 + 0.11*122.7 = 20.697.
        assert!(close(delay_impairment(300.0), 20.697, 1e-6));
        assert_eq!(delay_impairment(-3.0), 0.0);
    }

    #[test]
    fn g711_clean_call_is_about_4_4() {
        // 20 ms frame, no jitter, no RTT: R = 93.2 - 0.48 = 92.72.
        let m = Sample::default().mos(&G711);
        assert!(close(m, 4.40, TOL), "{m}");
        // G.729 without loss: R = 93.2 - 0.48 - 11 = 81.72 -> MOS 4.09.
        let m = Sample::default().mos(&G729);
        assert!(close(m, 4.09, TOL), "{m}");
    }

    #[test]
    fn loss_and_delay_lower_mos_as_the_model_says() {
        // 5 % random loss on G.711 with PLC: Ie_eff = 95*5/30.1 = 15.78,
        // R = 93.2 - 0.48 - 15.78 = 76.94 -> MOS 3.90.
        let s = Sample { expected: 1000, lost: 50, ..Sample::default() };
        assert!(close(s.loss_pct(), 5.0, 1e-9));
        let m = s.mos(&G711);
        assert!(close(m, mos(76.94), TOL) && close(m, 3.90, TOL), "{m}");
        // 300 ms RTT and 20 ms jitter: d = 150 + 40 + 20 = 210 ms.
        let s = Sample { rtt_ms: Some(300.0), jitter_ms: 20.0, ..Sample::default() };
        let want = mos(93.2 - (0.024 * 210.0 + 0.11 * (210.0 - 177.3)));
        assert!(close(s.mos(&G711), want, 1e-9));
        // The receiver's report wins when it saw more loss than the relay.
        let s = Sample { expected: 100, lost: 1, reported_fraction: 26, ..Sample::default() };
        assert!(close(s.loss_pct(), 10.16, TOL));
    }

    #[test]
    fn codec_table() {
        assert_eq!(codec("PCMU/8000"), G711);
        assert_eq!(codec("PCMA/8000"), G711);
        assert_eq!(codec("G729/8000"), G729);
        assert_eq!(codec("g723/8000"), G723);
        assert_eq!(codec("opus/48000/2"), G711);
        assert_eq!(codec(""), G711);
    }

    #[test]
    fn tracker_scores_intervals_with_packets() {
        const S: Nanos = 1_000_000_000;
        let mut t = QualityTracker::default();
        let sample = Sample { jitter_ms: 1.0, ..Sample::default() };
        assert_eq!(t.tick(S, 5 * S, (0, 0, 0, 0), sample, &G711), None, "first tick sets the base");
        assert_eq!(t.tick(3 * S, 5 * S, (100, 0, 100, 0), sample, &G711), None, "interval not over");
        // 250 expected, 0 lost in the first interval.
        let clean = t.tick(6 * S, 5 * S, (250, 0, 250, 0), sample, &G711).expect("scored");
        // 250 more expected, 25 lost (10 %) in 25 single losses.
        let lossy = t.tick(11 * S, 5 * S, (500, 25, 475, 25), sample, &G711).expect("scored");
        assert!(lossy < clean);
        assert!(close(t.loss_pct, 10.0, 1e-9));
        assert_eq!(t.intervals, 2);
        assert_eq!(t.min, lossy);
        assert!(close(t.mean(), f64::midpoint(clean, lossy), 1e-12));
        // No packets: not scored.
        assert_eq!(t.tick(17 * S, 5 * S, (500, 25, 475, 25), sample, &G711), None);
        assert_eq!(t.intervals, 2);
        // The same 10 % in 5 bursts of 5 scores lower (BurstR 4.2).
        let bursty = t.tick(23 * S, 5 * S, (750, 50, 700, 30), sample, &G711).expect("scored");
        assert!(bursty < lossy - 0.3, "{bursty} vs {lossy}");
    }

    #[test]
    fn burst_ratio_from_loss_events() {
        // No loss, or loss without events counted: random.
        assert_eq!(Sample { expected: 100, ..Sample::default() }.burst_r(), 1.0);
        assert_eq!(Sample { expected: 100, lost: 5, ..Sample::default() }.burst_r(), 1.0);
        // 50 of 1000 lost one at a time: p = 50/950, q = 1 -> 0.95, floored at 1.
        let random = Sample { expected: 1000, lost: 50, loss_events: 50, ..Sample::default() };
        assert_eq!(random.burst_r(), 1.0);
        // 50 lost in 10 bursts of 5: p = 10/950, q = 10/50 -> BurstR 4.75.
        let bursty = Sample { expected: 1000, lost: 50, loss_events: 10, ..Sample::default() };
        assert!(close(bursty.burst_r(), 1.0 / (10.0 / 950.0 + 0.2), 1e-12));
        assert!(close(bursty.burst_r(), 4.75, TOL));
        // G.107: Ie_eff at 5 % with BurstR 4.75 on G.711 (PLC):
        // 95 * 5 / (5 / 4.75 + 25.1) = 18.16, against 15.78 for random loss.
        assert!(close(ie_eff(&G711, 5.0, bursty.burst_r()), 18.16, TOL));
        assert!(bursty.mos(&G711) < random.mos(&G711));
        // Everything lost: no received packet to measure p from.
        assert_eq!(Sample { expected: 10, lost: 10, loss_events: 1, ..Sample::default() }.burst_r(), 1.0);
    }
}
