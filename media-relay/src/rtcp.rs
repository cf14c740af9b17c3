//! What the relay learns from the RTCP it relays: each endpoint's own
//! reception report (fraction and cumulative lost, jitter) and the round
//! trip between the relay and that endpoint.
//!
//! # Round trip (RFC 3550 §6.4.1)
//!
//! An endpoint that receives an SR remembers the middle 32 bits of its NTP
//! timestamp and echoes them as LSR in its next report block, with DLSR,
//! the time it held the SR (1/65536 s). RFC 3550 has the SR's *sender*
//! compute `RTT = A - LSR - DLSR` with `A` its arrival time of the report.
//! The relay stands in the middle and uses its own clock for both ends of
//! that sum: when it relays an SR from leg X toward leg Y it notes the SR's
//! LSR key and its own arrival time `t_sr`; when leg Y's report comes back
//! with that LSR, `RTT(relay<->Y) = (t_rr - t_sr) - DLSR`. No clock of an
//! endpoint is trusted (LSR is only a key), so the figure is right even when
//! the endpoints' NTP clocks are wrong. The end-to-end round trip is the
//! sum of both legs' figures.
//!
//! # Cost and ownership
//!
//! Owned and written by the worker that receives the leg, like
//! [`crate::stats::RtpStats`]. Only RTCP packets reach it (a few a second
//! per stream). Parsing reads fixed offsets of the compound packet through
//! [`RtcpPacket`]: no allocation, every read bounds-checked, at most
//! [`MAX_PACKETS`] packets of a compound looked at, nothing panics.

use crate::rtp::{RtcpPacket, RTCP_RR, RTCP_SR};
use crate::Nanos;

/// Packets of one compound datagram looked at.
pub const MAX_PACKETS: usize = 8;
/// SRs remembered per leg for matching LSR (an RR answers the last one;
/// two covers a report crossing the next SR in flight).
const SR_HISTORY: usize = 2;

/// An endpoint's latest RTCP view, as published to the control plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpReport {
    /// SRs seen from the endpoint.
    pub srs: u32,
    /// Report blocks seen from the endpoint (in SR or RR).
    pub blocks: u32,
    /// Fraction lost of the last block, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative lost of the last block.
    pub cumulative_lost: i32,
    /// Jitter of the last block, timestamp units.
    pub jitter: u32,
    /// Last round trip between the relay and this endpoint, µs; 0 unknown.
    pub rtt_us: u32,
}

/// One leg's RTCP state in the worker.
#[derive(Debug, Clone, Default)]
pub struct RtcpState {
    /// `(LSR key, arrival)` of the last SRs from this leg; arrival on the
    /// relay's clock in 1/65536 s, wrapping (the units of DLSR), 0 = none.
    srs: [(u32, u32); SR_HISTORY],
    next: u8,
    /// The leg's own reports.
    pub report: RtcpReport,
}

impl RtcpState {
    fn note_sr(&mut self, key: u32, now: u32) {
        let i = usize::from(self.next) % SR_HISTORY;
        self.srs[i] = (key, now);
        self.next = self.next.wrapping_add(1);
    }

    fn sr_arrival(&self, key: u32) -> Option<u32> {
        self.srs.iter().find(|(k, at)| *k == key && *at != 0).map(|s| s.1)
    }
}

/// The LSR key of an SR's NTP timestamp: its middle 32 bits.
#[must_use]
pub const fn lsr_key(ntp: u64) -> u32 {
    // Truncation keeps the middle 32 bits, as RFC 3550 defines LSR.
    (ntp >> 16) as u32
}

/// `now` (ns) on a wrapping clock of 1/65536 s, the units of DLSR (never
/// 0, which marks an empty SR slot).
#[must_use]
pub fn units(now: Nanos) -> u32 {
    // Wrapping into u32 is intended: only differences are used.
    ((u128::from(now) << 16) / 1_000_000_000) as u32 | 1
}

/// Round trip from a report block that echoes an SR the relay passed at
/// `sr_at`, arriving at `now` (both in [`units`]): `now - sr_at - dlsr`,
/// in µs. `None` when the result would be negative (a DLSR longer than
/// the relay's own interval: clock skew at the endpoint, or a bogus
/// report) or over 18 hours.
#[must_use]
pub fn rtt_us(sr_at: u32, now: u32, dlsr: u32) -> Option<u32> {
    let rtt = now.wrapping_sub(sr_at).wrapping_sub(dlsr).cast_signed();
    let rtt = u64::try_from(rtt).ok()?;
    u32::try_from(rtt * 1_000_000 / 65_536).ok()
}

/// Accounts one RTCP datagram (possibly compound) received from leg `leg`
/// (0 or 1) of `legs` at `now`. Malformed packets end the walk; what was
/// read before stays.
pub fn on_rtcp(legs: &mut [RtcpState; 2], leg: usize, buf: &[u8], now: Nanos) {
    let other = (leg & 1) ^ 1;
    let leg = leg & 1;
    let now = units(now);
    let mut at = 0;
    for _ in 0..MAX_PACKETS {
        let Some(rest) = buf.get(at..) else { return };
        let Ok(p) = RtcpPacket::new_checked(rest) else { return };
        let pt = p.packet_type();
        if pt == RTCP_SR {
            if let Some(si) = p.sender_info() {
                legs[leg].note_sr(lsr_key(si.ntp_timestamp), now);
                legs[leg].report.srs = legs[leg].report.srs.wrapping_add(1);
            }
        }
        if pt == RTCP_SR || pt == RTCP_RR {
            if let Some(b) = p.report_block(0) {
                let r = &mut legs[leg].report;
                r.blocks = r.blocks.wrapping_add(1);
                r.fraction_lost = b.fraction_lost;
                r.cumulative_lost = b.cumulative_lost;
                r.jitter = b.jitter;
                if b.lsr != 0 {
                    let rtt = legs[other].sr_arrival(b.lsr).and_then(|sr_at| rtt_us(sr_at, now, b.dlsr));
                    if let Some(us) = rtt {
                        legs[leg].report.rtt_us = us.max(1);
                    }
                }
            }
        }
        at += p.packet_len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    /// An SR with one report block (or none) and the given NTP timestamp.
    fn sr(ntp: u64, block: Option<(u8, i32, u32, u32, u32)>) -> Vec<u8> {
        let n = u8::from(block.is_some());
        let words = 6 + 6 * u16::from(n);
        let mut v = vec![0x80 | n, RTCP_SR];
        v.extend_from_slice(&words.to_be_bytes());
        v.extend_from_slice(&0x1111_1111u32.to_be_bytes());
        v.extend_from_slice(&ntp.to_be_bytes());
        v.extend_from_slice(&[0; 12]);
        if let Some(b) = block {
            push_block(&mut v, b);
        }
        v
    }

    fn rr(block: (u8, i32, u32, u32, u32)) -> Vec<u8> {
        let mut v = vec![0x81, RTCP_RR, 0, 7];
        v.extend_from_slice(&0x2222_2222u32.to_be_bytes());
        push_block(&mut v, block);
        v
    }

    fn push_block(v: &mut Vec<u8>, (fraction, cum, jitter, lsr, dlsr): (u8, i32, u32, u32, u32)) {
        v.extend_from_slice(&0x3333_3333u32.to_be_bytes());
        v.push(fraction);
        v.extend_from_slice(&cum.to_be_bytes()[1..]);
        v.extend_from_slice(&0x0001_0100u32.to_be_bytes());
        v.extend_from_slice(&jitter.to_be_bytes());
        v.extend_from_slice(&lsr.to_be_bytes());
        v.extend_from_slice(&dlsr.to_be_bytes());
    }

    fn sdes() -> Vec<u8> {
        vec![0x81, 202, 0, 2, 0x11, 0x11, 0x11, 0x11, 1, 1, b'x', 0]
    }

    #[test]
    fn rr_block_is_read() {
        let mut legs = [RtcpState::default(), RtcpState::default()];
        on_rtcp(&mut legs, 1, &rr((64, -3, 160, 0, 0)), 5 * MS);
        let r = legs[1].report;
        assert_eq!((r.blocks, r.srs, r.fraction_lost, r.cumulative_lost, r.jitter), (1, 0, 64, -3, 160));
        assert_eq!(r.rtt_us, 0, "no LSR: no round trip");
        assert_eq!(legs[0].report, RtcpReport::default());
    }

    #[test]
    fn round_trip_from_lsr_and_dlsr() {
        let mut legs = [RtcpState::default(), RtcpState::default()];
        let ntp = 0xdead_beef_1234_5678u64;
        // Leg A's SR passes the relay at t = 1 s.
        on_rtcp(&mut legs, 0, &sr(ntp, None), 1000 * MS);
        assert_eq!(legs[0].report.srs, 1);
        // Leg B held it 250 ms (16384 units) and its RR arrives at 1.330 s:
        // RTT relay<->B = 330 - 250 = 80 ms.
        on_rtcp(&mut legs, 1, &rr((0, 0, 0, lsr_key(ntp), 16_384)), 1330 * MS);
        // 1/65536 s resolution: within 16 µs.
        assert!(legs[1].report.rtt_us.abs_diff(80_000) <= 16, "{}", legs[1].report.rtt_us);
        let first = legs[1].report.rtt_us;
        // An LSR the relay never relayed gives no figure (the old one stays).
        on_rtcp(&mut legs, 1, &rr((0, 0, 0, 0x0bad_0bad, 0)), 2000 * MS);
        assert_eq!(legs[1].report.rtt_us, first);
        // A DLSR longer than the relay's interval is ignored.
        on_rtcp(&mut legs, 1, &rr((0, 0, 0, lsr_key(ntp), 65_536 * 10)), 2100 * MS);
        assert_eq!(legs[1].report.rtt_us, first);
        assert_eq!(rtt_us(10, 5, 0), None);
        assert_eq!(rtt_us(0, 65_536, 32_768), Some(500_000));
        // Across the wrap of the 1/65536 s clock.
        assert_eq!(rtt_us(u32::MAX - 65_535, 65_536, 0), Some(2_000_000));
    }

    #[test]
    fn compound_sr_sdes_and_mux_in_both_orders() {
        let mut legs = [RtcpState::default(), RtcpState::default()];
        let mut c = sr(0x0000_0001_0002_0000, Some((10, 5, 80, 0, 0)));
        c.extend(sdes());
        on_rtcp(&mut legs, 0, &c, MS);
        let r = legs[0].report;
        assert_eq!((r.srs, r.blocks, r.fraction_lost, r.cumulative_lost, r.jitter), (1, 1, 10, 5, 80));
        // SDES first, then an RR: the walk reaches the RR.
        let mut c = sdes();
        c.extend(rr((20, 7, 90, 0x0001_0002, 0)));
        on_rtcp(&mut legs, 1, &c, 2 * MS);
        assert_eq!(legs[1].report.fraction_lost, 20);
        assert!(legs[1].report.rtt_us.abs_diff(1000) <= 16, "SR of leg A at 1 ms, RR at 2 ms, DLSR 0");
    }

    #[test]
    fn truncated_and_garbage_never_panic() {
        let mut legs = [RtcpState::default(), RtcpState::default()];
        let full = sr(7, Some((1, 1, 1, 0, 0)));
        for n in 0..full.len() {
            on_rtcp(&mut legs, 0, &full[..n], MS);
        }
        // A truncated SR whose length field claims more than the buffer is
        // rejected whole.
        assert_eq!(legs[0].report, RtcpReport::default());
        // Garbage: every byte pattern of a few lengths, and a count claiming
        // more blocks than the length holds.
        let mut lie = rr((1, 1, 1, 0, 0));
        lie[0] = 0x9f;
        on_rtcp(&mut legs, 0, &lie, MS);
        assert_eq!(legs[0].report.blocks, 1, "first block read, the missing ones not");
        let mut x: u32 = 12345;
        for len in [1usize, 4, 8, 12, 31, 64, 200] {
            for _ in 0..200 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (x >> 16) as u8
                    })
                    .collect();
                on_rtcp(&mut legs, 1, &buf, MS);
            }
        }
        // A chain of zero-length-field packets stops after MAX_PACKETS.
        let chain: Vec<u8> = std::iter::repeat_n([0x80u8, 203, 0, 1, 0, 0, 0, 0], 100).flatten().collect();
        on_rtcp(&mut legs, 0, &chain, MS);
    }
}
