//! What the control plane and the workers share about a media stream, and
//! the messages they exchange.
//!
//! Ownership: a stream pair (one `m=` section of a call, both legs, RTP and
//! RTCP) lives in exactly one worker. The control plane creates it, changes
//! it and removes it only by sending a [`Command`] over that worker's bounded
//! SPSC ring. The worker alone writes [`DirShared`]; the control plane only
//! reads it. The worker reports back (socket closed, peer latched) with an
//! [`Event`] on a second ring.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::rtcp::RtcpReport;
use crate::stats::StatsSnapshot;
use crate::Nanos;

/// Channel index within a pair: leg A RTP.
pub const A_RTP: usize = 0;
/// Leg A RTCP.
pub const A_RTCP: usize = 1;
/// Leg B RTP.
pub const B_RTP: usize = 2;
/// Leg B RTCP.
pub const B_RTCP: usize = 3;

/// The channel a packet received on channel `c` leaves through.
#[must_use]
pub const fn peer_channel(c: usize) -> usize {
    c ^ 2
}

/// Whether channel `c` carries RTCP on its own port (not rtcp-mux).
#[must_use]
pub const fn is_rtcp_channel(c: usize) -> bool {
    c == A_RTCP || c == B_RTCP
}

// The layout the two functions above rely on: each leg's RTP and RTCP
// leave through the other leg's channel of the same kind.
const _: () = assert!(peer_channel(A_RTP) == B_RTP && peer_channel(A_RTCP) == B_RTCP);
const _: () = assert!(!is_rtcp_channel(A_RTP) && !is_rtcp_channel(B_RTP));

/// A UDP endpoint, IPv4 or IPv6, in 24 bytes (`Option<Endpoint>` too: the
/// family is the niche), for the addresses a session keeps per channel. A
/// [`SocketAddr`] is 32. An IPv6 address's scope id is kept (a link-local
/// peer is answered on its interface); its flow label is not (the kernel
/// reports 0 for received datagrams, and it is 0 on the way back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The address; IPv4 in the first 4 bytes, the rest 0.
    ip: [u8; 16],
    /// IPv6 scope id (a link-local peer's interface); 0 for IPv4.
    scope: u32,
    port: u16,
    family: Family,
}

/// The address family of an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
enum Family {
    V4,
    V6,
}

impl From<SocketAddr> for Endpoint {
    #[inline]
    fn from(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(v4) => {
                let mut ip = [0; 16];
                ip[..4].copy_from_slice(&v4.ip().octets());
                Self { ip, scope: 0, port: v4.port(), family: Family::V4 }
            }
            SocketAddr::V6(v6) => {
                Self { ip: v6.ip().octets(), scope: v6.scope_id(), port: v6.port(), family: Family::V6 }
            }
        }
    }
}

impl From<Endpoint> for SocketAddr {
    #[inline]
    fn from(e: Endpoint) -> Self {
        match e.family {
            Family::V4 => {
                let [a, b, c, d, ..] = e.ip;
                Self::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), e.port))
            }
            Family::V6 => Self::V6(SocketAddrV6::new(Ipv6Addr::from(e.ip), e.port, 0, e.scope)),
        }
    }
}

/// Payload type → clock rate, small and `Copy` so the worker looks it up
/// without allocation. Payload types and rates are kept in two arrays, so
/// the table is 44 bytes, not the 68 of `(u8, u32)` pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockTable {
    pts: [u8; 8],
    rates: [u32; 8],
    len: u8,
}

impl ClockTable {
    /// Adds a mapping (ignored when full or already present).
    pub fn insert(&mut self, pt: u8, rate: u32) {
        let n = usize::from(self.len);
        if self.get(pt).is_some() || n >= self.pts.len() {
            return;
        }
        self.pts[n] = pt;
        self.rates[n] = rate;
        self.len += 1;
    }

    /// Clock rate for a payload type; 0 when unknown.
    #[must_use]
    pub fn rate(&self, pt: u8) -> u32 {
        self.get(pt).unwrap_or(0)
    }

    /// The (payload type, clock rate) entries.
    pub fn entries(&self) -> impl Iterator<Item = (u8, u32)> + '_ {
        let n = usize::from(self.len);
        self.pts.iter().copied().zip(self.rates.iter().copied()).take(n)
    }

    fn get(&self, pt: u8) -> Option<u32> {
        let n = usize::from(self.len);
        self.pts.iter().take(n).position(|&p| p == pt).map(|i| self.rates[i])
    }
}

/// Statistics of one receiving channel, published by its worker with relaxed
/// atomic stores after each batch, read by the control plane.
#[derive(Debug, Default)]
pub struct DirShared {
    packets: AtomicU64,
    bytes: AtomicU64,
    rtp_packets: AtomicU64,
    expected: AtomicU64,
    lost: AtomicU64,
    duplicates: AtomicU64,
    reordered: AtomicU64,
    loss_events: AtomicU64,
    jitter: AtomicU32,
    jitter_us: AtomicU32,
    last_packet: AtomicU64,
    ssrc: AtomicU32,
    max_seq_ext: AtomicU32,
    foreign: AtomicU64,
    /// The sending endpoint's own RTCP view ([`RtcpReport`]); written on the
    /// leg's RTP channel only.
    rtcp_srs: AtomicU32,
    rtcp_blocks: AtomicU32,
    rtcp_fraction_lost: AtomicU32,
    rtcp_cumulative_lost: AtomicU32,
    rtcp_jitter: AtomicU32,
    rtcp_rtt_us: AtomicU32,
}

/// A read of [`DirShared`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DirSnapshot {
    /// RFC 3550 statistics of accepted packets.
    pub stats: StatsSnapshot,
    /// Packets from a source other than the latched/expected one, dropped.
    pub foreign_drops: u64,
    /// What this leg's endpoint said in its RTCP (SR/RR report blocks) and
    /// the round trip between the relay and it; on the RTP channel's
    /// snapshot (rtcp-mux or not), default on the RTCP channel's.
    pub rtcp: RtcpReport,
}

impl DirShared {
    /// Worker side: publish the current statistics.
    pub fn publish(&self, s: &StatsSnapshot, foreign: u64) {
        self.packets.store(s.packets, Relaxed);
        self.bytes.store(s.bytes, Relaxed);
        self.rtp_packets.store(s.rtp_packets, Relaxed);
        self.expected.store(s.expected, Relaxed);
        self.lost.store(s.lost.cast_unsigned(), Relaxed);
        self.duplicates.store(s.duplicates, Relaxed);
        self.reordered.store(s.reordered, Relaxed);
        self.loss_events.store(s.loss_events, Relaxed);
        self.jitter.store(s.jitter, Relaxed);
        self.jitter_us.store(s.jitter_us, Relaxed);
        self.last_packet.store(s.last_packet, Relaxed);
        self.ssrc.store(s.ssrc, Relaxed);
        self.max_seq_ext.store(s.max_seq_ext, Relaxed);
        self.foreign.store(foreign, Relaxed);
    }

    /// Worker side: publish the leg's RTCP view.
    pub fn publish_rtcp(&self, r: &RtcpReport) {
        self.rtcp_srs.store(r.srs, Relaxed);
        self.rtcp_blocks.store(r.blocks, Relaxed);
        self.rtcp_fraction_lost.store(u32::from(r.fraction_lost), Relaxed);
        self.rtcp_cumulative_lost.store(r.cumulative_lost.cast_unsigned(), Relaxed);
        self.rtcp_jitter.store(r.jitter, Relaxed);
        self.rtcp_rtt_us.store(r.rtt_us, Relaxed);
    }

    /// Control side: read the last published statistics.
    #[must_use]
    pub fn read(&self) -> DirSnapshot {
        DirSnapshot {
            stats: StatsSnapshot {
                packets: self.packets.load(Relaxed),
                bytes: self.bytes.load(Relaxed),
                rtp_packets: self.rtp_packets.load(Relaxed),
                expected: self.expected.load(Relaxed),
                lost: self.lost.load(Relaxed).cast_signed(),
                duplicates: self.duplicates.load(Relaxed),
                reordered: self.reordered.load(Relaxed),
                loss_events: self.loss_events.load(Relaxed),
                jitter: self.jitter.load(Relaxed),
                jitter_us: self.jitter_us.load(Relaxed),
                last_packet: self.last_packet.load(Relaxed),
                ssrc: self.ssrc.load(Relaxed),
                max_seq_ext: self.max_seq_ext.load(Relaxed),
            },
            foreign_drops: self.foreign.load(Relaxed),
            rtcp: RtcpReport {
                srs: self.rtcp_srs.load(Relaxed),
                blocks: self.rtcp_blocks.load(Relaxed),
                fraction_lost: u8::try_from(self.rtcp_fraction_lost.load(Relaxed)).unwrap_or(u8::MAX),
                cumulative_lost: self.rtcp_cumulative_lost.load(Relaxed).cast_signed(),
                jitter: self.rtcp_jitter.load(Relaxed),
                rtt_us: self.rtcp_rtt_us.load(Relaxed),
            },
        }
    }

    /// RTP packets accepted so far (one load, for the control plane's
    /// frequent passes).
    #[must_use]
    pub fn rtp_packets(&self) -> u64 {
        self.rtp_packets.load(Relaxed)
    }

    /// Time of the last accepted packet (0 = never).
    #[must_use]
    pub fn last_packet(&self) -> Nanos {
        self.last_packet.load(Relaxed)
    }
}

/// Setup of one receiving channel.
#[derive(Debug)]
pub struct ChannelSetup {
    /// The bound, non-blocking socket (moved into the worker, which closes it).
    pub socket: UdpSocket,
    /// Where this leg said it receives (from SDP); `None` until known.
    pub peer: Option<SocketAddr>,
    /// A source already latched (a session taken over from another node).
    pub latched: Option<SocketAddr>,
    /// Statistics to continue from (a session taken over from another node).
    pub resume: Option<StatsSnapshot>,
}

/// The published statistics of a pair's four channels, by channel index:
/// one allocation per pair. All four are written by the pair's one worker,
/// so no two writers share a cache line.
pub type PairShared = [DirShared; 4];

/// A new stream pair: channels indexed by [`A_RTP`], [`A_RTCP`], [`B_RTP`], [`B_RTCP`].
#[derive(Debug)]
pub struct PairSetup {
    /// Slot in the worker's table, chosen by the control plane.
    pub slot: u32,
    /// The four channels.
    pub channels: [ChannelSetup; 4],
    /// Their published statistics.
    pub shared: Arc<PairShared>,
}

/// Control plane → worker.
#[derive(Debug)]
pub enum Command {
    /// Start relaying a new pair.
    Add(Box<PairSetup>),
    /// A leg's SDP changed: new expected peer; forget the latched source
    /// when `relatch` is set (the endpoint moved).
    SetPeer {
        /// Pair slot.
        slot: u32,
        /// Channel index.
        channel: u8,
        /// New expected peer.
        peer: Option<SocketAddr>,
        /// Forget the latched address.
        relatch: bool,
        /// Clock rates from the new SDP.
        clock: ClockTable,
    },
    /// Stop relaying, close the sockets, and answer with [`Event::Removed`].
    Remove {
        /// Pair slot.
        slot: u32,
    },
}

/// Worker → control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The pair's sockets are closed: its slot and ports may be reused.
    Removed {
        /// Pair slot.
        slot: u32,
    },
    /// A channel latched onto a source address.
    Latched {
        /// Pair slot.
        slot: u32,
        /// Channel index.
        channel: u8,
        /// The source it latched to.
        addr: SocketAddr,
    },
    /// A source sent a channel more foreign packets in a second than
    /// `relay.flood_ban_pps`.
    Flood {
        /// The flooding source.
        addr: std::net::IpAddr,
    },
}
