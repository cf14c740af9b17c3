//! Per-call quality in the control plane: the interval MOS of each
//! direction of each media pair, one-way audio, and the reports.
//!
//! Runs in the housekeeping pass under the relay's lock. It reads only the
//! statistics the workers already publish ([`crate::stream::DirShared`]),
//! so the packet path does no extra work for it.
//!
//! Directions are named by the leg the media comes *from*: direction 0 is
//! leg A (the offerer) to leg B, direction 1 the reverse.

use super::calls::MediaPair;
use crate::control::QualityReport;
use crate::quality::{self, QualityTracker, Sample};
use crate::stream::DirSnapshot;
use crate::Nanos;

/// How long scored intervals are.
pub const INTERVAL: Nanos = 5_000_000_000;
/// The other direction counts as flowing when it carried RTP this recently.
const FLOWING: Nanos = 2_000_000_000;

/// The quality state of one media pair (boxed in [`MediaPair`]).
#[derive(Debug, Clone, Default)]
pub struct PairQuality {
    /// Interval MOS per direction.
    pub dirs: [QualityTracker; 2],
    /// Flagged as one-way audio, per direction (the silent one).
    pub one_way: [bool; 2],
    /// Each leg's SDP direction: (sends, receives).
    pub sdp_dir: [(bool, bool); 2],
    /// Per direction: RTP packet count at the last pass and when it last
    /// changed (monotonic ns; 0 never).
    rtp_seen: [(u64, Nanos); 2],
}

/// `(sends, receives)` of an SDP direction attribute (RFC 3264 §6.1).
#[must_use]
pub fn sdp_direction(d: Option<&str>) -> (bool, bool) {
    match d {
        Some("sendonly") => (true, false),
        Some("recvonly") => (false, true),
        Some("inactive") => (false, false),
        _ => (true, true),
    }
}

/// One direction just flagged as one-way audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneWay {
    /// 1-based `m=` index.
    pub media: usize,
    /// The silent direction (0: A to B, 1: B to A).
    pub silent_from: usize,
}

fn first_codec(c: &str) -> Option<&str> {
    c.split(' ').find(|s| !s.is_empty())
}

impl MediaPair {
    /// The SDP codec the direction is scored with: the answer's first codec
    /// (what was negotiated), else the offer's.
    fn codec_name(&self) -> &str {
        first_codec(&self.codecs[1]).or_else(|| first_codec(&self.codecs[0])).unwrap_or("")
    }

    /// Whether the SDP lets media flow from leg `from` to the other.
    pub fn expects(&self, from: usize) -> bool {
        let to = 1 - from;
        let q = &self.quality;
        q.sdp_dir[from].0 && q.sdp_dir[to].1 && self.sdp_rtp[to].is_some() && self.sdp_rtp[from].is_some()
    }

    /// The model's inputs for direction `from` now: the relay's view of
    /// the sender's RTP, the receiver's reports, both legs' round trips.
    fn sample(&self, from: usize) -> (DirSnapshot, Sample) {
        let sent = self.shared[from * 2].read();
        let recv = self.shared[(1 - from) * 2].read().rtcp;
        let rate =
            self.codec_name().split('/').nth(1).and_then(|r| r.parse::<u32>().ok()).filter(|r| *r > 0).unwrap_or(8000);
        let reported_ms = f64::from(recv.jitter) * 1000.0 / f64::from(rate);
        let jitter_ms = (f64::from(sent.stats.jitter_us) / 1000.0).max(reported_ms);
        let rtts = [sent.rtcp.rtt_us, recv.rtt_us];
        let rtt_ms = (rtts.iter().any(|r| *r > 0)).then(|| rtts.iter().map(|r| f64::from(*r)).sum::<f64>() / 1000.0);
        let sample = Sample { reported_fraction: recv.fraction_lost, jitter_ms, rtt_ms, ..Sample::default() };
        (sent, sample)
    }

    /// One housekeeping pass over this pair at `now`: score the directions
    /// whose interval is over, and flag one-way audio once `answered` and
    /// one direction has been silent for `one_way_after` (0: never) while
    /// the other flowed. `since` is the last offer/answer (monotonic ns).
    pub fn score(&mut self, now: Nanos, answered: bool, since: Nanos, one_way_after: Nanos) -> Vec<OneWay> {
        let mut flagged = Vec::new();
        for from in 0..2 {
            // Every pass: one load per direction. The full inputs only when
            // an interval ends (every INTERVAL).
            let rtp = self.shared[from * 2].rtp_packets();
            if rtp != self.quality.rtp_seen[from].0 {
                self.quality.rtp_seen[from] = (rtp, now);
            }
            if self.expects(from) && self.quality.dirs[from].due(now, INTERVAL) {
                let (snap, sample) = self.sample(from);
                let s = &snap.stats;
                let codec = quality::codec(self.codec_name());
                self.quality.dirs[from].tick(
                    now,
                    INTERVAL,
                    (s.expected, s.lost, s.rtp_packets, s.loss_events),
                    sample,
                    &codec,
                );
            }
        }
        if !answered || one_way_after == 0 || !self.expects(0) || !self.expects(1) {
            return flagged;
        }
        for from in 0..2 {
            let q = &self.quality;
            let other = q.rtp_seen[1 - from].1;
            let silent_since = q.rtp_seen[from].1.max(since);
            let flowing = other != 0 && now.saturating_sub(other) < FLOWING;
            if !q.one_way[from] && flowing && now.saturating_sub(silent_since) >= one_way_after {
                self.quality.one_way[from] = true;
                flagged.push(OneWay { media: 0, silent_from: from });
            }
        }
        flagged
    }

    /// The quality report of direction `from` at `now`.
    pub fn quality_report(&self, from: usize, now: Nanos, since: Nanos) -> QualityReport {
        let (snap, sample) = self.sample(from);
        let t = &self.quality.dirs[from];
        let recv = self.shared[(1 - from) * 2].read().rtcp;
        let relay_loss = snap.stats.loss_fraction() * 100.0;
        let reported = if snap.stats.expected > 0 && recv.cumulative_lost > 0 {
            100.0 * f64::from(recv.cumulative_lost) / snap.stats.expected as f64
        } else {
            0.0
        };
        let last = self.quality.rtp_seen[from].1.max(since);
        QualityReport {
            mos: t.last,
            mos_min: t.min,
            mos_mean: t.mean(),
            intervals: t.intervals,
            loss_pct: relay_loss.max(reported).min(100.0),
            jitter_ms: sample.jitter_ms,
            jitter_max_ms: t.jitter_max_ms.max(sample.jitter_ms),
            rtt_ms: sample.rtt_ms,
            one_way: self.quality.one_way[from],
            held: !self.expects(from),
            idle_ms: now.saturating_sub(last) / 1_000_000,
        }
    }
}
