//! Per-direction RTP statistics: packet and byte counts, loss, duplicates,
//! reordering and interarrival jitter, with the arithmetic of RFC 3550
//! Appendix A.
//!
//! # Ownership
//!
//! One [`RtpStats`] exists per direction of a stream. It is owned and
//! written by exactly one worker thread (the one that receives that
//! direction); nothing else touches it. Other threads see only
//! [`StatsSnapshot`] values, which are plain `Copy` data the owner hands
//! out. The update functions take the arrival time as an argument and do
//! no allocation, locking, system calls or clock reads.
//!
//! # Sequence numbers (RFC 3550 A.1)
//!
//! - The first RTP packet initialises the state (no probation): its
//!   sequence number becomes the base and the highest seen.
//! - A packet less than `MAX_DROPOUT` (3000) ahead of the highest moves the
//!   highest forward. The highest is kept *extended*: crossing 65535 → 0
//!   adds a cycle of 65536. [`StatsSnapshot::max_seq_ext`] is the RFC's
//!   `cycles + max_seq`, the value an RR carries (truncated to 32 bits).
//! - A packet up to `MAX_MISORDER - 1` (99) behind the highest is late
//!   (reordered or duplicate) and does not move it.
//! - Anything else (a jump of 3000 or more ahead, or 100 or more behind) is
//!   discarded and remembered; if the next such packet is its immediate
//!   successor, the sender is taken to have restarted its sequence and the
//!   state starts over from that second packet (the RFC's `bad_seq`
//!   logic). A discarded packet counts in `packets`, `bytes` and
//!   `rtp_packets` only.
//! - `expected = max_ext - base + 1` and `lost = expected - received`,
//!   where `received` counts every accepted packet including duplicates, as
//!   in the RFC; `lost` can therefore be negative.
//! - One deviation from the RFC: a late packet older than the base (for
//!   example the stream's first packet arrived after its second) lowers the
//!   base, so such reordering does not show up as negative loss.
//!
//! # Duplicates and reordering
//!
//! A 128-bit window remembers which of the 128 extended sequence numbers up
//! to the highest have been seen. A packet already in the window is a
//! duplicate: it counts in `duplicates` (and, as in the RFC, in `received`)
//! but not in `reordered`, and does not update jitter. A packet behind the
//! highest that is not a duplicate counts in `reordered`.
//!
//! # SSRC changes and epochs
//!
//! A packet with a different SSRC, or a confirmed sequence restart, closes
//! the current *epoch*: its expected and received counts are added to
//! running sums and the sequence state starts over. `expected` and `lost`
//! in a snapshot are the sums of the closed epochs plus the current one;
//! `packets`, `bytes`, `duplicates` and `reordered` simply accumulate. An
//! SSRC change also resets the jitter estimate; a restart within one SSRC
//! keeps it but forgets the previous transit time. The type assumes one
//! SSRC at a time: streams that interleave several SSRCs on one direction
//! (RTX, BUNDLE) would start a new epoch at every switch.
//!
//! # Jitter (RFC 3550 A.8)
//!
//! With the payload's clock rate `r` (Hz) and arrival time `now` (ns), the
//! arrival in timestamp units is `now * r / 1e9` (computed in `u128`,
//! wrapping into `u32`), `transit = arrival - rtp_ts` and
//! `D = |transit - last_transit|`. The estimate is kept scaled by 16 as in
//! the RFC's integer code, `jitter += D - ((jitter + 8) >> 4)`, and
//! reported as `J = jitter >> 4` in timestamp units (the value an RR
//! carries) and converted to microseconds with the last clock rate. A clock
//! rate of 0 (unknown) skips the update; a change of clock rate forgets the
//! previous transit time so that no sample mixes two clocks.

use crate::Nanos;

/// A forward jump of this many or more is not a normal gap (RFC 3550 A.1).
const MAX_DROPOUT: u16 = 3000;
/// A packet this many or more behind the highest is not a late packet.
const MAX_MISORDER: u16 = 100;
/// Extended sequence numbers are stored with this offset so that a late
/// packet from before the first one still has a non-negative number.
const EXT_OFFSET: u64 = 1 << 16;
/// Nanoseconds per second.
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Statistics for one direction of one stream. See the module docs for the
/// exact semantics. Owned and written by one worker thread.
#[derive(Debug, Clone, Default)]
pub struct RtpStats {
    /// All packets seen (RTP and other).
    packets: u64,
    /// All bytes seen (RTP and other).
    bytes: u64,
    /// All RTP packets seen, including discarded ones.
    rtp_packets: u64,
    /// Accepted packets whose sequence number had already been seen.
    duplicates: u64,
    /// Accepted late packets that were not duplicates.
    reordered: u64,
    /// Loss events: in-order packets that skipped sequence numbers (the
    /// start of a gap), over all epochs; with the loss count it gives the
    /// burstiness of the loss (see [`crate::quality`]).
    loss_events: u64,
    /// Arrival time of the last packet, 0 before the first.
    last_packet: Nanos,
    /// Sum of `expected` over closed epochs.
    prior_expected: u64,
    /// Sum of `received` over closed epochs.
    prior_received: u64,
    /// Sequence state of the current epoch; `None` before the first RTP
    /// packet.
    seq: Option<SeqState>,
    /// Jitter estimate of the current SSRC.
    jitter: JitterState,
}

/// Sequence-number state of one epoch (RFC 3550 A.1 `source`).
#[derive(Debug, Clone)]
struct SeqState {
    ssrc: u32,
    /// Extended base sequence number (plus `EXT_OFFSET`).
    base_ext: u64,
    /// Extended highest sequence number (plus `EXT_OFFSET`); its low 16
    /// bits are the RFC's `max_seq`.
    max_ext: u64,
    /// The sequence number that would confirm a restart, if a jump was seen.
    bad_seq: Option<u16>,
    /// Accepted packets, duplicates included.
    received: u64,
    /// Bit `k` set: extended sequence number `max_ext - k` was seen. Two
    /// halves (low, high) of a `u128`, so the state is 8-aligned, not 16.
    window: [u64; 2],
}

/// What the sequence check made of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeqVerdict {
    /// At or ahead of the highest (within `MAX_DROPOUT`); accepted.
    InOrder,
    /// Ahead of the highest by more than one: accepted, after a gap.
    Gap,
    /// Behind the highest, not seen before; accepted.
    Reordered,
    /// Already seen; accepted (counts as received, as in the RFC).
    Duplicate,
    /// A jump; not accepted, remembered in `bad_seq`.
    Discarded,
    /// The second packet of a confirmed jump: start a new epoch.
    Restart,
}

impl SeqState {
    const fn new(ssrc: u32, seq: u16) -> Self {
        let ext = EXT_OFFSET + seq as u64;
        Self { ssrc, base_ext: ext, max_ext: ext, bad_seq: None, received: 1, window: [1, 0] }
    }

    /// RFC 3550 A.1 `update_seq`, plus the duplicate window.
    fn update(&mut self, seq: u16) -> SeqVerdict {
        // Truncation keeps the RFC's 16-bit max_seq.
        let max_seq = self.max_ext as u16;
        let udelta = seq.wrapping_sub(max_seq);
        if udelta == 0 {
            // The highest is always in the window.
            self.received += 1;
            SeqVerdict::Duplicate
        } else if udelta < MAX_DROPOUT {
            // In order, with a permissible gap. Adding the 16-bit distance to
            // the extended number counts the 65535 -> 0 wrap as a cycle.
            self.max_ext += u64::from(udelta);
            self.set_window(self.window().checked_shl(u32::from(udelta)).unwrap_or(0) | 1);
            self.received += 1;
            if udelta > 1 {
                SeqVerdict::Gap
            } else {
                SeqVerdict::InOrder
            }
        } else if udelta <= u16::MAX - MAX_MISORDER + 1 {
            // A large jump, or far behind.
            if self.bad_seq == Some(seq) {
                SeqVerdict::Restart
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
                SeqVerdict::Discarded
            }
        } else {
            // Late by 1..MAX_MISORDER-1, so within the 128-bit window.
            let back = max_seq.wrapping_sub(seq);
            let bit = 1u128 << back;
            self.received += 1;
            if self.window() & bit != 0 {
                SeqVerdict::Duplicate
            } else {
                self.set_window(self.window() | bit);
                // max_ext >= EXT_OFFSET > back, so this cannot underflow.
                let ext = self.max_ext - u64::from(back);
                self.base_ext = self.base_ext.min(ext);
                SeqVerdict::Reordered
            }
        }
    }

    const fn window(&self) -> u128 {
        (self.window[1] as u128) << 64 | self.window[0] as u128
    }

    const fn set_window(&mut self, w: u128) {
        // Truncation splits the halves.
        self.window = [w as u64, (w >> 64) as u64];
    }

    /// `expected = max - base + 1` for this epoch.
    const fn expected(&self) -> u64 {
        self.max_ext - self.base_ext + 1
    }
}

/// Interarrival jitter state (RFC 3550 A.8).
#[derive(Debug, Clone, Default)]
struct JitterState {
    /// Clock rate of the previous sample, Hz; 0 before the first.
    clock_rate: u32,
    /// Transit time of the previous sample in timestamp units.
    last_transit: Option<u32>,
    /// The RFC's jitter scaled by 16.
    scaled: u64,
}

impl JitterState {
    const fn new() -> Self {
        Self { clock_rate: 0, last_transit: None, scaled: 0 }
    }

    fn update(&mut self, rtp_ts: u32, clock_rate: u32, now: Nanos) {
        if clock_rate == 0 {
            return;
        }
        if clock_rate != self.clock_rate {
            self.clock_rate = clock_rate;
            self.last_transit = None;
        }
        // Wrapping into u32 is intended: only differences are used.
        let arrival = (u128::from(now) * u128::from(clock_rate) / NANOS_PER_SEC) as u32;
        let transit = arrival.wrapping_sub(rtp_ts);
        if let Some(last) = self.last_transit {
            let diff = transit.wrapping_sub(last);
            // |diff| read as a signed 32-bit difference.
            let d = u64::from(diff.min(diff.wrapping_neg()));
            // (scaled + 8) >> 4 <= scaled for every scaled, so no underflow;
            // scaled converges to at most 16 * 2^31, so no overflow.
            self.scaled = self.scaled + d - ((self.scaled + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// J in timestamp units.
    fn jitter(&self) -> u32 {
        u32::try_from(self.scaled >> 4).unwrap_or(u32::MAX)
    }

    /// J in microseconds, using the last clock rate (0 if none).
    fn jitter_us(&self) -> u32 {
        if self.clock_rate == 0 {
            return 0;
        }
        let us = u64::from(self.jitter()) * 1_000_000 / u64::from(self.clock_rate);
        u32::try_from(us).unwrap_or(u32::MAX)
    }
}

impl RtpStats {
    /// Empty statistics; the same as `RtpStats::default()`.
    pub const fn new() -> Self {
        Self {
            packets: 0,
            bytes: 0,
            rtp_packets: 0,
            duplicates: 0,
            reordered: 0,
            loss_events: 0,
            last_packet: 0,
            prior_expected: 0,
            prior_received: 0,
            seq: None,
            jitter: JitterState::new(),
        }
    }

    /// Statistics that continue from a snapshot taken on another node (HA
    /// takeover). The counters carry over; the sequence check starts a new
    /// epoch at the first packet here. The snapshot may be up to one sync
    /// interval old, and packets the old node received after it were not
    /// lost, so counting the gap from its `max_seq_ext` would report false
    /// loss.
    #[must_use]
    pub fn resume(s: &StatsSnapshot) -> Self {
        let received = i64::try_from(s.expected).unwrap_or(i64::MAX).saturating_sub(s.lost).max(0).cast_unsigned();
        Self {
            packets: s.packets,
            bytes: s.bytes,
            rtp_packets: s.rtp_packets,
            duplicates: s.duplicates,
            reordered: s.reordered,
            loss_events: s.loss_events,
            last_packet: 0,
            prior_expected: s.expected,
            prior_received: received,
            seq: None,
            jitter: JitterState::new(),
        }
    }

    /// Account one received RTP packet. `now` is monotonic ns of arrival;
    /// `clock_rate` Hz of its payload type (0 = unknown → skip the jitter
    /// update). `len` is the datagram length in bytes.
    pub fn on_rtp(&mut self, seq: u16, rtp_ts: u32, ssrc: u32, len: usize, clock_rate: u32, now: Nanos) {
        self.count(len, now);
        self.rtp_packets += 1;
        let verdict = match self.seq.as_mut() {
            Some(state) if state.ssrc == ssrc => state.update(seq),
            _ => {
                // First packet or new SSRC: new epoch, fresh jitter.
                self.close_epoch();
                self.seq = Some(SeqState::new(ssrc, seq));
                self.jitter = JitterState::new();
                SeqVerdict::InOrder
            }
        };
        match verdict {
            SeqVerdict::InOrder => {}
            SeqVerdict::Gap => self.loss_events += 1,
            SeqVerdict::Reordered => self.reordered += 1,
            SeqVerdict::Duplicate => {
                self.duplicates += 1;
                return;
            }
            SeqVerdict::Discarded => return,
            SeqVerdict::Restart => {
                self.close_epoch();
                self.seq = Some(SeqState::new(ssrc, seq));
                self.jitter.last_transit = None;
            }
        }
        self.jitter.update(rtp_ts, clock_rate, now);
    }

    /// Account a packet that is not RTP (RTCP, or unparseable payload such
    /// as DTLS/STUN) — counts packets/bytes only.
    pub fn on_other(&mut self, len: usize, now: Nanos) {
        self.count(len, now);
    }

    /// A copy of the current counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let (cur_expected, cur_received, ssrc, max_seq_ext) = self.seq.as_ref().map_or((0, 0, 0, 0), |s| {
            // Truncation to 32 bits matches the RR field.
            let ext = (s.max_ext - EXT_OFFSET) as u32;
            (s.expected(), s.received, s.ssrc, ext)
        });
        let expected = self.prior_expected + cur_expected;
        let received = self.prior_received + cur_received;
        let lost =
            i64::try_from(expected).unwrap_or(i64::MAX).saturating_sub(i64::try_from(received).unwrap_or(i64::MAX));
        StatsSnapshot {
            packets: self.packets,
            bytes: self.bytes,
            rtp_packets: self.rtp_packets,
            expected,
            lost,
            duplicates: self.duplicates,
            reordered: self.reordered,
            loss_events: self.loss_events,
            jitter: self.jitter.jitter(),
            jitter_us: self.jitter.jitter_us(),
            last_packet: self.last_packet,
            ssrc,
            max_seq_ext,
        }
    }

    fn count(&mut self, len: usize, now: Nanos) {
        self.packets += 1;
        self.bytes += len as u64;
        self.last_packet = now;
    }

    /// Adds the current epoch's counts to the running sums and clears it.
    fn close_epoch(&mut self) {
        if let Some(state) = self.seq.take() {
            self.prior_expected += state.expected();
            self.prior_received += state.received;
        }
    }
}

/// Statistics of a direction on which every packet is other traffic (an
/// RTCP port: the table never parses RTP there): what an [`RtpStats`] fed
/// only [`RtpStats::on_other`] would report, in 32 bytes instead of 144.
/// The state a session taken over from another node continues from is
/// boxed, as it is rare. Owned and written by one worker thread.
#[derive(Debug, Clone, Default)]
pub struct OtherStats {
    /// All packets seen.
    packets: u64,
    /// All bytes seen.
    bytes: u64,
    /// Arrival time of the last packet, 0 before the first.
    last_packet: Nanos,
    /// The statistics carried over from another node ([`OtherStats::resume`]).
    resumed: Option<Box<RtpStats>>,
}

impl OtherStats {
    /// Empty statistics.
    #[must_use]
    pub const fn new() -> Self {
        Self { packets: 0, bytes: 0, last_packet: 0, resumed: None }
    }

    /// Statistics that continue from a snapshot taken on another node, as
    /// [`RtpStats::resume`] does.
    #[must_use]
    pub fn resume(s: &StatsSnapshot) -> Self {
        Self { packets: s.packets, bytes: s.bytes, last_packet: 0, resumed: Some(Box::new(RtpStats::resume(s))) }
    }

    /// Account one packet; the same as [`RtpStats::on_other`].
    pub const fn on_other(&mut self, len: usize, now: Nanos) {
        self.packets += 1;
        self.bytes += len as u64;
        self.last_packet = now;
    }

    /// A copy of the current counters.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        let base = self.resumed.as_ref().map(|r| r.snapshot()).unwrap_or_default();
        StatsSnapshot { packets: self.packets, bytes: self.bytes, last_packet: self.last_packet, ..base }
    }
}

/// A point-in-time copy of one direction's statistics. Serializable: an HA
/// peer continues from it (see [`RtpStats::resume`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// All packets seen, RTP and other.
    pub packets: u64,
    /// All bytes seen, RTP and other.
    pub bytes: u64,
    /// RTP packets seen, including duplicates and discarded jumps.
    pub rtp_packets: u64,
    /// Packets expected from the sequence numbers, summed over epochs.
    pub expected: u64,
    /// `expected - received`; negative when duplicates outnumber losses.
    pub lost: i64,
    /// Duplicate packets.
    pub duplicates: u64,
    /// Late, non-duplicate packets.
    pub reordered: u64,
    /// Loss events (gaps in the sequence, each of one or more packets).
    #[serde(default)]
    pub loss_events: u64,
    /// RFC 3550 J in timestamp units, i.e. the value an RR would carry.
    pub jitter: u32,
    /// Jitter converted to microseconds with the last clock rate.
    pub jitter_us: u32,
    /// Arrival time of the last packet (monotonic ns); 0 = never.
    pub last_packet: Nanos,
    /// SSRC of the current epoch; 0 before the first RTP packet.
    pub ssrc: u32,
    /// Extended highest sequence number of the current epoch
    /// (cycles << 16 | seq), as an RR carries it.
    pub max_seq_ext: u32,
}

impl StatsSnapshot {
    /// Fraction of expected packets lost, in `0.0..=1.0`; 0 when nothing
    /// was expected or `lost` is negative.
    pub fn loss_fraction(&self) -> f64 {
        if self.expected == 0 || self.lost <= 0 {
            return 0.0;
        }
        (self.lost as f64 / self.expected as f64).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SSRC: u32 = 0x1234_5678;
    const MS: Nanos = 1_000_000;
    /// An arbitrary non-zero start time (1000 s).
    const T0: Nanos = 1_000_000 * MS;

    /// Feeds `seqs` as 8 kHz packets 20 ms apart with matching timestamps.
    fn feed(stats: &mut RtpStats, ssrc: u32, seqs: &[u16]) {
        for (i, &seq) in seqs.iter().enumerate() {
            let i = i as u64;
            stats.on_rtp(seq, 160 * i as u32, ssrc, 172, 8000, T0 + 20 * MS * i);
        }
    }

    #[test]
    fn resume_carries_counters_without_false_loss() {
        // 100 packets with 10 lost on node A; node B resumes from its
        // snapshot and sees the stream continue 50 sequence numbers later.
        let mut a = RtpStats::new();
        let seqs: Vec<u16> = (0..110).filter(|s| s % 11 != 5).collect();
        feed(&mut a, SSRC, &seqs);
        let snap = a.snapshot();
        assert_eq!(snap.lost, 10);
        let mut b = RtpStats::resume(&snap);
        assert_eq!(b.snapshot().packets, snap.packets);
        assert_eq!(b.snapshot().lost, 10);
        let later: Vec<u16> = (160..170).collect();
        feed(&mut b, SSRC, &later);
        let s = b.snapshot();
        assert_eq!(s.packets, snap.packets + 10);
        assert_eq!(s.expected, snap.expected + 10);
        assert_eq!(s.lost, 10, "the takeover gap is not counted as loss");
        assert_eq!(s.ssrc, SSRC);
    }

    #[test]
    fn new_equals_default() {
        assert_eq!(RtpStats::new().snapshot(), RtpStats::default().snapshot());
        assert_eq!(RtpStats::new().snapshot(), StatsSnapshot::default());
    }

    #[test]
    fn in_order_no_loss() {
        // Seq 1000..=1099: expected = 1099 - 1000 + 1 = 100, received 100.
        let mut s = RtpStats::new();
        let seqs: Vec<u16> = (1000..1100).collect();
        feed(&mut s, SSRC, &seqs);
        let snap = s.snapshot();
        assert_eq!(snap.packets, 100);
        assert_eq!(snap.rtp_packets, 100);
        assert_eq!(snap.bytes, 100 * 172);
        assert_eq!(snap.expected, 100);
        assert_eq!(snap.lost, 0);
        assert_eq!((snap.duplicates, snap.reordered), (0, 0));
        assert_eq!(snap.max_seq_ext, 1099);
        assert_eq!(snap.ssrc, SSRC);
        assert_eq!(snap.last_packet, T0 + 20 * MS * 99);
        assert_eq!(snap.loss_fraction(), 0.0);
        // Constant spacing matching the timestamps: every D is 0.
        assert_eq!((snap.jitter, snap.jitter_us), (0, 0));
    }

    #[test]
    fn one_lost_packet() {
        // Seq 0..=9 without 5: expected = 9 - 0 + 1 = 10, received 9, lost 1.
        let mut s = RtpStats::new();
        feed(&mut s, SSRC, &[0, 1, 2, 3, 4, 6, 7, 8, 9]);
        let snap = s.snapshot();
        assert_eq!(snap.expected, 10);
        assert_eq!(snap.lost, 1);
        assert_eq!(snap.reordered, 0);
        assert_eq!(snap.loss_fraction(), 0.1);
    }

    #[test]
    fn wrap_with_loss_after_it() {
        // 65530..=65535, 0, (1 lost), 2, 3.
        // base = 65530; after the wrap, ext max = 1 cycle + 3 = 65539.
        // expected = 65539 - 65530 + 1 = 10, received 9, lost 1.
        let mut s = RtpStats::new();
        feed(&mut s, SSRC, &[65530, 65531, 65532, 65533, 65534, 65535, 0, 2, 3]);
        let snap = s.snapshot();
        assert_eq!(snap.max_seq_ext, 0x0001_0003);
        assert_eq!(snap.expected, 10);
        assert_eq!(snap.lost, 1);
        assert_eq!((snap.duplicates, snap.reordered), (0, 0));
    }

    #[test]
    fn late_packet_across_the_wrap() {
        // 65534, 0, 65535 (late, from before the wrap), 1.
        // ext: 65534, 65536, 65535, 65537 -> expected 4, received 4.
        let mut s = RtpStats::new();
        feed(&mut s, SSRC, &[65534, 0, 65535, 1]);
        let snap = s.snapshot();
        assert_eq!(snap.max_seq_ext, 0x0001_0001);
        assert_eq!((snap.expected, snap.lost, snap.reordered), (4, 0, 1));
    }

    #[test]
    fn duplicates() {
        // 1, 2, 3, 3, 4, 2: expected = 4 - 1 + 1 = 4; received counts all 6
        // (RFC), so lost = 4 - 6 = -2. Two duplicates, nothing reordered.
        let mut s = RtpStats::new();
        feed(&mut s, SSRC, &[1, 2, 3, 3, 4, 2]);
        let snap = s.snapshot();
        assert_eq!(snap.rtp_packets, 6);
        assert_eq!(snap.expected, 4);
        assert_eq!(snap.lost, -2);
        assert_eq!(snap.duplicates, 2);
        assert_eq!(snap.reordered, 0);
        assert_eq!(snap.loss_fraction(), 0.0);
    }

    #[test]
    fn reordering() {
        // 1, 2, 4, 3, 5: 3 arrives late -> reordered 1; expected 5, lost 0.
        // A second copy of 3 is then a duplicate, not another reorder.
        let mut s = RtpStats::new();
        feed(&mut s, SSRC, &[1, 2, 4, 3, 5]);
        let snap = s.snapshot();
        assert_eq!((snap.expected, snap.lost), (5, 0));
        assert_eq!((snap.reordered, snap.duplicates), (1, 0));
        assert_eq!(snap.max_seq_ext, 5);
        s.on_rtp(3, 320, SSRC, 172, 8000, T0 + 200 * MS);
        let snap = s.snapshot();
        assert_eq!((snap.reordered, snap.duplicates), (1, 1));
        assert_eq!(snap.lost, -1);
    }

    #[test]
    fn late_packet_before_first_lowers_base() {
        // 10, 9, 11: 9 is before the base, which drops to 9.
        // expected = 11 - 9 + 1 = 3, received 3, lost 0 (RFC would say -1).
        let mut s = RtpStats::new();
        feed(&mut s, SSRC, &[10, 9, 11]);
        let snap = s.snapshot();
        assert_eq!((snap.expected, snap.lost, snap.reordered), (3, 0, 1));
    }

    #[test]
    fn duplicate_detection_beyond_the_window_edge() {
        // Seq 0..=150, then 60 again: 90 behind, inside the window -> dup.
        let mut s = RtpStats::new();
        let seqs: Vec<u16> = (0..=150).collect();
        feed(&mut s, SSRC, &seqs);
        s.on_rtp(60, 0, SSRC, 172, 0, T0);
        let snap = s.snapshot();
        assert_eq!((snap.duplicates, snap.reordered), (1, 0));
        // 100 behind is a jump, discarded: nothing changes but rtp_packets.
        s.on_rtp(50, 0, SSRC, 172, 0, T0);
        let after = s.snapshot();
        assert_eq!(after.rtp_packets, snap.rtp_packets + 1);
        assert_eq!((after.expected, after.lost), (snap.expected, snap.lost));
        assert_eq!((after.duplicates, after.reordered), (1, 0));
    }

    #[test]
    fn large_gap_within_dropout_is_loss() {
        // 0, then 2999 (udelta 2999 < 3000): expected 3000, received 2.
        let mut s = RtpStats::new();
        feed(&mut s, SSRC, &[0, 2999]);
        let snap = s.snapshot();
        assert_eq!((snap.expected, snap.lost), (3000, 2998));
        // A late packet far behind the old window is still reordered.
        s.on_rtp(2950, 0, SSRC, 172, 0, T0);
        assert_eq!(s.snapshot().reordered, 1);
    }

    #[test]
    fn single_jump_is_discarded() {
        // 10, 11, 40000 (stray), 12: the stray is discarded, 12 accepted.
        let mut s = RtpStats::new();
        feed(&mut s, SSRC, &[10, 11, 40000, 12]);
        let snap = s.snapshot();
        assert_eq!(snap.rtp_packets, 4);
        assert_eq!((snap.expected, snap.lost), (3, 0));
        assert_eq!(snap.max_seq_ext, 12);
    }

    #[test]
    fn confirmed_jump_restarts_sequence() {
        // 10..=20 (11 packets), then 30000, 30001, 30002.
        // 30000 is discarded; 30001 confirms the restart and opens a new
        // epoch with base 30001. Epoch 1: expected 11, received 11.
        // Epoch 2: expected 30002 - 30001 + 1 = 2, received 2.
        let mut s = RtpStats::new();
        let mut seqs: Vec<u16> = (10..=20).collect();
        seqs.extend([30000, 30001, 30002]);
        feed(&mut s, SSRC, &seqs);
        let snap = s.snapshot();
        assert_eq!(snap.rtp_packets, 14);
        assert_eq!((snap.expected, snap.lost), (13, 0));
        assert_eq!(snap.max_seq_ext, 30002);
    }

    #[test]
    fn far_behind_twice_restarts_sequence() {
        // 1000, 1001, then 800 (200 behind: a jump), 801 confirms.
        // Epoch 1: expected 2, received 2. Epoch 2: base 801, 801..=802.
        let mut s = RtpStats::new();
        feed(&mut s, SSRC, &[1000, 1001, 800, 801, 802]);
        let snap = s.snapshot();
        assert_eq!((snap.expected, snap.lost), (4, 0));
        assert_eq!(snap.max_seq_ext, 802);
        assert_eq!(snap.reordered, 0);
    }

    #[test]
    fn ssrc_change_starts_new_epoch() {
        // SSRC A: 100..=109 without 105 -> expected 10, received 9.
        // SSRC B: 5000..=5004 -> expected 5, received 5.
        // Totals: expected 15, lost 1; current ssrc B, max 5004.
        let mut s = RtpStats::new();
        feed(&mut s, 0xaaaa, &[100, 101, 102, 103, 104, 106, 107, 108, 109]);
        feed(&mut s, 0xbbbb, &[5000, 5001, 5002, 5003, 5004]);
        let snap = s.snapshot();
        assert_eq!(snap.packets, 14);
        assert_eq!(snap.rtp_packets, 14);
        assert_eq!(snap.expected, 15);
        assert_eq!(snap.lost, 1);
        assert_eq!(snap.ssrc, 0xbbbb);
        assert_eq!(snap.max_seq_ext, 5004);
        // Seq 100 under the new SSRC is a jump (4904 behind), not a dup.
        s.on_rtp(100, 0, 0xbbbb, 172, 8000, T0);
        assert_eq!(s.snapshot().duplicates, 0);
    }

    #[test]
    fn ssrc_change_resets_jitter() {
        // Build jitter on SSRC A, then switch: B starts at J = 0 and its
        // first packet only sets the transit.
        let mut s = RtpStats::new();
        s.on_rtp(1, 0, 0xaaaa, 100, 8000, T0);
        s.on_rtp(2, 160, 0xaaaa, 100, 8000, T0 + 30 * MS); // D = 80
        assert_eq!(s.snapshot().jitter, 5); // scaled 80 -> J 80 >> 4 = 5
        s.on_rtp(7, 999_999, 0xbbbb, 100, 8000, T0 + 40 * MS);
        assert_eq!(s.snapshot().jitter, 0);
        s.on_rtp(8, 999_999 + 160, 0xbbbb, 100, 8000, T0 + 60 * MS);
        assert_eq!(s.snapshot().jitter, 0);
    }

    #[test]
    fn on_other_counts_packets_and_bytes_only() {
        let mut s = RtpStats::new();
        s.on_other(100, 5);
        s.on_rtp(1, 0, SSRC, 200, 8000, 7);
        s.on_other(50, 9);
        let snap = s.snapshot();
        assert_eq!(snap.packets, 3);
        assert_eq!(snap.bytes, 350);
        assert_eq!(snap.rtp_packets, 1);
        assert_eq!((snap.expected, snap.lost), (1, 0));
        assert_eq!(snap.last_packet, 9);
    }

    #[test]
    fn jitter_known_delay_pattern() {
        // 8 kHz, 20 ms / 160 units apart. Extra network delay per packet:
        // 0, 5 ms, 0, 10 ms, 0  ->  in timestamp units 0, 40, 0, 80, 0.
        // Transit differences D: -, 40, 40, 80, 80.
        // scaled jitter s += D - ((s + 8) >> 4):
        //   p1: 0   + 40 - (8   >> 4 = 0)  = 40   J = 2
        //   p2: 40  + 40 - (48  >> 4 = 3)  = 77   J = 4
        //   p3: 77  + 80 - (85  >> 4 = 5)  = 152  J = 9
        //   p4: 152 + 80 - (160 >> 4 = 10) = 222  J = 13
        // (Floating-point RFC: 2.5, 4.84, 9.54, 13.94.)
        // jitter_us = 13 * 1_000_000 / 8000 = 1625.
        let delays_ms = [0, 5, 0, 10, 0];
        let expect_j = [0, 2, 4, 9, 13];
        let mut s = RtpStats::new();
        for (i, (&delay, &j)) in delays_ms.iter().zip(&expect_j).enumerate() {
            let i = i as u64;
            let now = T0 + 20 * MS * i + delay * MS;
            s.on_rtp(i as u16, 5000 + 160 * i as u32, SSRC, 172, 8000, now);
            assert_eq!(s.snapshot().jitter, j, "after packet {i}");
        }
        assert_eq!(s.jitter.scaled, 222);
        assert_eq!(s.snapshot().jitter_us, 1625);
    }

    #[test]
    fn jitter_constant_offset_and_wrapping_clock() {
        // A constant delay and a timestamp that wraps u32: every D is 0.
        // `now` is large enough that now * 48000 / 1e9 overflows u32.
        let mut s = RtpStats::new();
        let start = u64::MAX / 2;
        for i in 0..50u32 {
            let ts = (u32::MAX - 960 * 10).wrapping_add(960 * i);
            s.on_rtp(i as u16, ts, SSRC, 100, 48_000, start + 20 * MS * u64::from(i));
        }
        assert_eq!(s.snapshot().jitter, 0);
    }

    #[test]
    fn jitter_skipped_for_unknown_clock_and_reset_on_rate_change() {
        let mut s = RtpStats::new();
        // Unknown clock rate: no update at all.
        s.on_rtp(1, 0, SSRC, 100, 0, T0);
        s.on_rtp(2, 0, SSRC, 100, 0, T0 + 500 * MS);
        assert_eq!(s.snapshot().jitter, 0);
        assert_eq!(s.snapshot().jitter_us, 0);
        // 8 kHz: first sample sets transit, second has D = 16 (2 ms late).
        s.on_rtp(3, 0, SSRC, 100, 8000, T0);
        s.on_rtp(4, 160, SSRC, 100, 8000, T0 + 22 * MS);
        assert_eq!(s.jitter.scaled, 16);
        // Switching to 90 kHz forgets the transit: wildly different
        // timestamps give no sample, so scaled stays 16.
        s.on_rtp(5, 123_456_789, SSRC, 100, 90_000, T0 + 40 * MS);
        assert_eq!(s.jitter.scaled, 16);
        // J = 16 >> 4 = 1 unit; at 90 kHz that is 1e6 / 90000 = 11 us.
        assert_eq!(s.snapshot().jitter, 1);
        assert_eq!(s.snapshot().jitter_us, 11);
    }

    #[test]
    fn duplicates_do_not_update_jitter() {
        let mut s = RtpStats::new();
        s.on_rtp(1, 0, SSRC, 100, 8000, T0);
        s.on_rtp(2, 160, SSRC, 100, 8000, T0 + 20 * MS);
        // A copy of 2 arriving 100 ms later would give D = 800.
        s.on_rtp(2, 160, SSRC, 100, 8000, T0 + 120 * MS);
        assert_eq!(s.jitter.scaled, 0);
        assert_eq!(s.snapshot().duplicates, 1);
    }

    #[test]
    fn loss_fraction() {
        let snap = StatsSnapshot { expected: 200, lost: 50, ..StatsSnapshot::default() };
        assert_eq!(snap.loss_fraction(), 0.25);
        let none = StatsSnapshot::default();
        assert_eq!(none.loss_fraction(), 0.0);
        let negative = StatsSnapshot { expected: 10, lost: -3, ..StatsSnapshot::default() };
        assert_eq!(negative.loss_fraction(), 0.0);
        // 3 lost of 20 from real traffic: 0..=19 without 4, 9, 14.
        let mut s = RtpStats::new();
        let seqs: Vec<u16> = (0..20).filter(|n| n % 5 != 4 || *n == 19).collect();
        feed(&mut s, SSRC, &seqs);
        let snap = s.snapshot();
        assert_eq!((snap.expected, snap.lost), (20, 3));
        assert_eq!(snap.loss_fraction(), 0.15);
    }

    proptest! {
        #[test]
        fn arbitrary_traffic_never_panics(
            pkts in prop::collection::vec(
                (any::<u16>(), any::<u32>(), 0u32..3, any::<u16>(), any::<u32>(), any::<u64>()),
                0..200,
            )
        ) {
            let mut s = RtpStats::new();
            for (seq, ts, ssrc, len, rate, now) in pkts {
                s.on_rtp(seq, ts, ssrc, usize::from(len), rate, now);
                let snap = s.snapshot();
                prop_assert!(snap.loss_fraction() >= 0.0 && snap.loss_fraction() <= 1.0);
                prop_assert!(snap.rtp_packets <= snap.packets);
            }
        }

        #[test]
        fn in_window_traffic_accounts_exactly(
            start in any::<u16>(),
            steps in prop::collection::vec(1u16..50, 1..300),
        ) {
            // Strictly increasing with gaps: lost = sum of (gap - 1).
            let mut s = RtpStats::new();
            let mut seq = start;
            let mut gaps = 0u64;
            let mut events = 0u64;
            s.on_rtp(seq, 0, SSRC, 10, 0, 1);
            for step in steps {
                seq = seq.wrapping_add(step);
                gaps += u64::from(step - 1);
                events += u64::from(step > 1);
                s.on_rtp(seq, 0, SSRC, 10, 0, 1);
            }
            let snap = s.snapshot();
            prop_assert_eq!(snap.lost, i64::try_from(gaps).unwrap_or(i64::MAX));
            // Each skip in the sequence is one loss event, however long.
            prop_assert_eq!(snap.loss_events, events);
            prop_assert_eq!(snap.max_seq_ext & 0xffff, u32::from(seq));
        }

        #[test]
        fn other_stats_report_what_rtp_stats_fed_other_traffic_would(
            from in prop::option::of((any::<u32>(), any::<u32>(), any::<u32>(), any::<i32>(), any::<u32>())),
            pkts in prop::collection::vec((any::<u16>(), any::<u32>()), 0..50),
        ) {
            let from = from.map(|(packets, bytes, expected, lost, duplicates)| StatsSnapshot {
                packets: packets.into(),
                bytes: bytes.into(),
                rtp_packets: packets.into(),
                expected: expected.into(),
                lost: lost.into(),
                duplicates: duplicates.into(),
                reordered: 7,
                loss_events: 4,
                jitter: 9,
                jitter_us: 1125,
                last_packet: 5,
                ssrc: 3,
                max_seq_ext: 70_000,
            });
            let (mut rtp, mut other) = match &from {
                Some(s) => (RtpStats::resume(s), OtherStats::resume(s)),
                None => (RtpStats::new(), OtherStats::new()),
            };
            prop_assert_eq!(rtp.snapshot(), other.snapshot());
            for (len, now) in pkts {
                rtp.on_other(usize::from(len), u64::from(now));
                other.on_other(usize::from(len), u64::from(now));
                prop_assert_eq!(rtp.snapshot(), other.snapshot());
            }
        }
    }
}
