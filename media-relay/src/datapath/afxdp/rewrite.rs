//! Parsing a received Ethernet frame down to its UDP payload, and rewriting
//! its Ethernet, IP and UDP headers in place so it leaves towards the other
//! leg: new MACs, new addresses and ports, the IPv4 header checksum, and the
//! UDP checksum updated incrementally (RFC 1624). A zero IPv4 UDP checksum
//! ("none computed") stays zero. Between IPv4 and IPv6 legs, [`translate`]
//! replaces the IP header by one of the other family, the UDP datagram
//! staying where it is and the frame's start moving.
//!
//! Contract: [`parse`] checks every length it relies on, so after it returns
//! `Ok`, [`rewrite`] and the payload range never index out of bounds. Bad
//! input gives a `Copy` error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

const ETH_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_VLAN: u16 = 0x8100;
const ETH_P_QINQ: u16 = 0x88a8;
const IPV4_MIN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const PROTO_UDP: u8 = 17;
/// TTL / hop limit of a relayed packet: it leaves the relay as a new
/// datagram, as it would from a socket.
pub const TTL: u8 = 64;

/// Why a frame cannot be relayed on the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// A header is cut short, or the IP/UDP lengths disagree with the frame.
    Truncated,
    /// Not IPv4/IPv6 over Ethernet with at most one VLAN tag (ARP, QinQ, ...).
    NotIp,
    /// IP but not UDP (or IPv6 with extension headers), or an IPv4 fragment.
    NotUdp,
}

/// Why a parsed frame cannot be rewritten in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteError {
    /// The new addresses are of another family than the frame's (the
    /// headers would change size: see [`translate`]), or, for
    /// [`translate`], of the frame's family or of two families.
    FamilyMismatch,
    /// [`translate`]: the buffer has no room before the frame for the
    /// larger header (or does not hold the frame).
    NoRoom,
}

/// How much a frame grows at its front when [`translate`] turns its IPv4
/// header (without options) into an IPv6 one.
pub const TRANSLATE_GROWTH: usize = IPV6_LEN - IPV4_MIN;

/// Where the headers of a parsed frame are, and what they say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the UDP header.
    pub l4: usize,
    /// The datagram's source (the sender).
    pub src: SocketAddr,
    /// The datagram's destination (one of our ports).
    pub dst: SocketAddr,
    /// The UDP payload, by the UDP length (Ethernet padding excluded).
    pub payload: Range<usize>,
    /// The frame carries one 802.1Q/802.1ad tag (which [`rewrite`] does
    /// not handle: the worker sends such packets through the kernel).
    pub vlan: bool,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses `frame` (Ethernet II, at most one VLAN tag, IPv4 or IPv6, UDP).
///
/// # Errors
/// [`ParseError`] for anything that is not a complete, unfragmented UDP
/// datagram over IPv4/IPv6.
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    let mut ethertype = be16(frame, 12).ok_or(ParseError::Truncated)?;
    let mut l3 = ETH_LEN;
    let vlan = matches!(ethertype, ETH_P_VLAN | ETH_P_QINQ);
    if vlan {
        ethertype = be16(frame, ETH_LEN + 2).ok_or(ParseError::Truncated)?;
        l3 += 4;
    }
    let (src_ip, dst_ip, l4, ip_end) = match ethertype {
        ETH_P_IPV4 => {
            let ip = frame.get(l3..l3 + IPV4_MIN).ok_or(ParseError::Truncated)?;
            if ip[0] >> 4 != 4 {
                return Err(ParseError::NotIp);
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ihl < IPV4_MIN || total < ihl + UDP_LEN || frame.len() < l3 + total {
                return Err(ParseError::Truncated);
            }
            if ip[9] != PROTO_UDP {
                return Err(ParseError::NotUdp);
            }
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return Err(ParseError::NotUdp);
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (IpAddr::V4(src), IpAddr::V4(dst), l3 + ihl, l3 + total)
        }
        ETH_P_IPV6 => {
            let ip = frame.get(l3..l3 + IPV6_LEN).ok_or(ParseError::Truncated)?;
            if ip[0] >> 4 != 6 {
                return Err(ParseError::NotIp);
            }
            if ip[6] != PROTO_UDP {
                return Err(ParseError::NotUdp);
            }
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if plen < UDP_LEN || frame.len() < l3 + IPV6_LEN + plen {
                return Err(ParseError::Truncated);
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            d.copy_from_slice(&ip[24..40]);
            (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)), l3 + IPV6_LEN, l3 + IPV6_LEN + plen)
        }
        _ => return Err(ParseError::NotIp),
    };
    let udp = frame.get(l4..l4 + UDP_LEN).ok_or(ParseError::Truncated)?;
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen < UDP_LEN || l4 + ulen > ip_end {
        return Err(ParseError::Truncated);
    }
    Ok(Parsed {
        l3,
        l4,
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        payload: l4 + UDP_LEN..l4 + ulen,
        vlan,
    })
}

/// The link-layer addresses a rewritten frame leaves with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct L2 {
    /// Our egress interface's MAC.
    pub src: [u8; 6],
    /// The next hop's MAC.
    pub dst: [u8; 6],
}

/// One's-complement sum of `bytes` (an odd last byte is padded with zero),
/// added to `sum`, not folded.
fn sum16(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    u16::try_from(sum).unwrap_or(0xffff)
}

/// The Internet checksum (RFC 1071) of `bytes`.
#[must_use]
pub fn checksum(bytes: &[u8]) -> u16 {
    !fold(sum16(0, bytes))
}

/// Incremental update (RFC 1624, eqn. 3): the checksum `check` of some data
/// in which the bytes `old` were replaced by `new` (even lengths; they may
/// differ, as when a pseudo-header's IPv4 addresses become IPv6 ones).
#[must_use]
pub fn checksum_replace(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!check);
    for (bytes, flip) in [(old, 0xffff), (new, 0)] {
        for c in bytes.chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]) ^ flip);
            // Keep room: fold now and then so the sum never overflows.
            if sum > 0xffff_0000 {
                sum = u32::from(fold(sum));
            }
        }
    }
    !fold(sum)
}

/// The full UDP checksum of the datagram at `l4` (for tests and for
/// checking rewrites), from the pseudo-header and the bytes.
#[must_use]
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let mut sum = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = sum16(sum, &s.octets());
            sum = sum16(sum, &d.octets());
        }
        (s, d) => {
            sum = sum16(sum, &v6_octets(s));
            sum = sum16(sum, &v6_octets(d));
        }
    }
    sum += u32::from(PROTO_UDP);
    sum += u32::try_from(udp.len()).unwrap_or(0);
    // The checksum field itself counts as zero.
    sum = sum16(sum, udp.get(..6).unwrap_or(udp));
    sum = sum16(sum, udp.get(8..).unwrap_or(&[]));
    match !fold(sum) {
        0 => 0xffff,
        c => c,
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// How the UDP checksum of a rewritten frame is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksum {
    /// Updated from the received one (RFC 1624): cheap, and a datagram
    /// corrupted on the way in stays detectably corrupt.
    #[default]
    Incremental,
    /// Computed from scratch over the datagram: for senders on the same
    /// host (veth, loopback) whose frames carry only the pseudo-header sum
    /// (checksum offload), which an incremental update cannot fix.
    Full,
}

/// Rewrites the parsed frame in place so that it goes from `src` to `dst`
/// over the link `l2`: MACs, IP addresses, TTL/hop limit, ports, the IPv4
/// header checksum (recomputed) and the UDP checksum (updated
/// incrementally, or recomputed with [`Checksum::Full`]; a zero IPv4 UDP
/// checksum stays zero either way).
///
/// # Errors
/// [`RewriteError::FamilyMismatch`] when `src`/`dst` are not of the frame's
/// family; the frame is then unchanged.
pub fn rewrite(
    frame: &mut [u8],
    p: &Parsed,
    l2: &L2,
    src: SocketAddr,
    dst: SocketAddr,
    mode: Checksum,
) -> Result<(), RewriteError> {
    let Some(old_udp) = frame.get(p.l4..p.l4 + UDP_LEN) else { return Err(RewriteError::FamilyMismatch) };
    let mut old_ports = [0u8; 4];
    old_ports.copy_from_slice(&old_udp[..4]);
    let old_check = u16::from_be_bytes([old_udp[6], old_udp[7]]);
    let mut new_ports = [0u8; 4];
    new_ports[..2].copy_from_slice(&src.port().to_be_bytes());
    new_ports[2..].copy_from_slice(&dst.port().to_be_bytes());

    let check = match (p.src.ip(), src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = frame.get_mut(p.l3..p.l4).ok_or(RewriteError::FamilyMismatch)?;
            let mut old_addrs = [0u8; 8];
            old_addrs.copy_from_slice(&ip[12..20]);
            let mut new_addrs = [0u8; 8];
            new_addrs[..4].copy_from_slice(&s.octets());
            new_addrs[4..].copy_from_slice(&d.octets());
            ip[8] = TTL;
            ip[12..20].copy_from_slice(&new_addrs);
            ip[10..12].copy_from_slice(&[0, 0]);
            let hc = checksum(ip);
            ip[10..12].copy_from_slice(&hc.to_be_bytes());
            if old_check == 0 {
                0
            } else {
                let c = checksum_replace(old_check, &old_addrs, &new_addrs);
                checksum_replace(c, &old_ports, &new_ports)
            }
        }
        (IpAddr::V6(_), IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = frame.get_mut(p.l3..p.l4).ok_or(RewriteError::FamilyMismatch)?;
            let mut old_addrs = [0u8; 32];
            old_addrs.copy_from_slice(&ip[8..40]);
            let mut new_addrs = [0u8; 32];
            new_addrs[..16].copy_from_slice(&s.octets());
            new_addrs[16..].copy_from_slice(&d.octets());
            ip[7] = TTL;
            ip[8..40].copy_from_slice(&new_addrs);
            // Mandatory over IPv6: a zero received checksum is invalid, so
            // compute one from scratch rather than carry the zero over.
            if old_check == 0 {
                u16::MAX // placeholder, recomputed below
            } else {
                let c = checksum_replace(old_check, &old_addrs, &new_addrs);
                checksum_replace(c, &old_ports, &new_ports)
            }
        }
        _ => return Err(RewriteError::FamilyMismatch),
    };
    let udp_end = p.payload.end;
    let Some(udp) = frame.get_mut(p.l4..udp_end) else { return Err(RewriteError::FamilyMismatch) };
    udp[..4].copy_from_slice(&new_ports);
    let recompute = (p.src.is_ipv6() && old_check == 0) || (mode == Checksum::Full && old_check != 0);
    let check = if recompute {
        udp[6..8].copy_from_slice(&[0, 0]);
        udp_checksum(src.ip(), dst.ip(), udp)
    } else if check == 0 && old_check != 0 {
        // 0 means "no checksum": the one's-complement equivalent is 0xffff.
        0xffff
    } else {
        check
    };
    udp[6..8].copy_from_slice(&check.to_be_bytes());
    if let Some(eth) = frame.get_mut(..12) {
        eth[..6].copy_from_slice(&l2.dst);
        eth[6..].copy_from_slice(&l2.src);
    }
    Ok(())
}

/// `a` then `b` as the bytes of a UDP pseudo-header (4 or 16 each), and
/// how many of the 32 are used.
fn pseudo_addrs(a: IpAddr, b: IpAddr) -> ([u8; 32], usize) {
    let mut out = [0u8; 32];
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            out[..4].copy_from_slice(&a.octets());
            out[4..8].copy_from_slice(&b.octets());
            (out, 8)
        }
        (a, b) => {
            out[..16].copy_from_slice(&v6_octets(a));
            out[16..].copy_from_slice(&v6_octets(b));
            (out, 32)
        }
    }
}

/// Rewrites the parsed frame that starts at `buf[head]` so that it goes
/// from `src` to `dst` over the link `l2` when those are of the other IP
/// family: the IP header is replaced by one of that family (traffic class
/// kept, TTL/hop limit [`TTL`], IPv4 options dropped, an IPv4 header
/// unfragmented with DF set), the UDP datagram stays where it is with its
/// new ports, and the frame's start moves by the difference (IPv4 to IPv6:
/// [`TRANSLATE_GROWTH`] bytes earlier, into `buf[..head]`). A VLAN tag and
/// Ethernet padding are left out. The UDP checksum is updated
/// incrementally (the pseudo-header's addresses change), or computed from
/// scratch with [`Checksum::Full`] or when the received one is zero (IPv6
/// needs one).
///
/// Returns where the new frame lies in `buf`.
///
/// # Errors
/// [`RewriteError::FamilyMismatch`] when `src` and `dst` are not both of
/// the other family than the frame's; [`RewriteError::NoRoom`] when the
/// new headers do not fit before the datagram. The buffer is unchanged.
pub fn translate(
    buf: &mut [u8],
    head: usize,
    p: &Parsed,
    l2: &L2,
    src: SocketAddr,
    dst: SocketAddr,
    mode: Checksum,
) -> Result<Range<usize>, RewriteError> {
    /// The new IP header's addresses.
    enum Ip {
        V4(Ipv4Addr, Ipv4Addr),
        V6(Ipv6Addr, Ipv6Addr),
    }
    let new_ip = match (p.src.ip(), src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V6(s), IpAddr::V6(d)) => Ip::V6(s, d),
        (IpAddr::V6(_), IpAddr::V4(s), IpAddr::V4(d)) => Ip::V4(s, d),
        _ => return Err(RewriteError::FamilyMismatch),
    };
    let to_v6 = matches!(new_ip, Ip::V6(..));
    let (l3, l4, end) = (head + p.l3, head + p.l4, head + p.payload.end);
    let ip_len = if to_v6 { IPV6_LEN } else { IPV4_MIN };
    let start = l4.checked_sub(ip_len + ETH_LEN).ok_or(RewriteError::NoRoom)?;
    // `parse` checked these for the frame; `buf` must hold it.
    if end > buf.len() || l4 + UDP_LEN > end || end - l4 > usize::from(u16::MAX) - IPV4_MIN {
        return Err(RewriteError::NoRoom);
    }
    let ulen = u16::try_from(end - l4).map_err(|_| RewriteError::NoRoom)?;
    // What the new headers keep of the old ones, read before they are overwritten.
    let tclass = if to_v6 { buf[l3 + 1] } else { (buf[l3] << 4) | (buf[l3 + 1] >> 4) };
    let udp = &mut buf[l4..end];
    let old_check = u16::from_be_bytes([udp[6], udp[7]]);
    let mut old_ports = [0u8; 4];
    old_ports.copy_from_slice(&udp[..4]);
    let mut new_ports = [0u8; 4];
    new_ports[..2].copy_from_slice(&src.port().to_be_bytes());
    new_ports[2..].copy_from_slice(&dst.port().to_be_bytes());
    udp[..4].copy_from_slice(&new_ports);
    let check = if old_check == 0 || mode == Checksum::Full {
        udp[6..8].copy_from_slice(&[0, 0]);
        udp_checksum(src.ip(), dst.ip(), udp)
    } else {
        let (old, old_n) = pseudo_addrs(p.src.ip(), p.dst.ip());
        let (new, new_n) = pseudo_addrs(src.ip(), dst.ip());
        let c = checksum_replace(old_check, &old[..old_n], &new[..new_n]);
        match checksum_replace(c, &old_ports, &new_ports) {
            0 => 0xffff,
            c => c,
        }
    };
    udp[6..8].copy_from_slice(&check.to_be_bytes());
    let ip = &mut buf[start + ETH_LEN..l4];
    match new_ip {
        Ip::V6(s, d) => {
            ip[..4].copy_from_slice(&[0x60 | (tclass >> 4), tclass << 4, 0, 0]);
            ip[4..6].copy_from_slice(&ulen.to_be_bytes());
            ip[6] = PROTO_UDP;
            ip[7] = TTL;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
        }
        Ip::V4(s, d) => {
            // At most u16::MAX (checked above).
            let total = ulen.saturating_add(20);
            ip[..2].copy_from_slice(&[0x45, tclass]);
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            // Identification 0 with DF: an atomic datagram (RFC 6864).
            ip[4..10].copy_from_slice(&[0, 0, 0x40, 0, TTL, PROTO_UDP]);
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let hc = checksum(ip);
            ip[10..12].copy_from_slice(&hc.to_be_bytes());
        }
    }
    let eth = &mut buf[start..start + ETH_LEN];
    eth[..6].copy_from_slice(&l2.dst);
    eth[6..12].copy_from_slice(&l2.src);
    eth[12..].copy_from_slice(&(if to_v6 { ETH_P_IPV6 } else { ETH_P_IPV4 }).to_be_bytes());
    Ok(start..end)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds an Ethernet + IP + UDP frame with a correct IP header checksum
    /// and UDP checksum (or a zero UDP checksum when `zero_csum`).
    pub(crate) fn frame(src: SocketAddr, dst: SocketAddr, payload: &[u8], zero_csum: bool) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        let ulen = u16::try_from(UDP_LEN + payload.len()).unwrap();
        let mut udp = Vec::new();
        udp.extend_from_slice(&src.port().to_be_bytes());
        udp.extend_from_slice(&dst.port().to_be_bytes());
        udp.extend_from_slice(&ulen.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        if !zero_csum {
            let c = udp_checksum(src.ip(), dst.ip(), &udp);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
        }
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
                let total = 20 + ulen;
                let mut ip = vec![0x45, 0xb8];
                ip.extend_from_slice(&total.to_be_bytes());
                ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 17, 17, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let c = checksum(&ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&ulen.to_be_bytes());
                f.extend_from_slice(&[17, 9]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => panic!("mixed families"),
        }
        f.extend_from_slice(&udp);
        f
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const L2X: L2 = L2 { src: [0x02, 0xaa, 0, 0, 0, 1], dst: [0x02, 0xbb, 0, 0, 0, 2] };

    /// What a frame built from scratch for the new addresses looks like,
    /// apart from the MACs and TTL/DSCP that `frame` fixes.
    fn expect_same_as_fresh(out: &[u8], src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let p = parse(out).unwrap();
        assert_eq!((p.src, p.dst), (src, dst));
        assert_eq!(&out[p.payload.clone()], payload);
        assert_eq!(&out[..6], &L2X.dst);
        assert_eq!(&out[6..12], &L2X.src);
        let udp = &out[p.l4..p.payload.end];
        let got = u16::from_be_bytes([udp[6], udp[7]]);
        assert_eq!(got, udp_checksum(src.ip(), dst.ip(), udp), "UDP checksum");
        if src.is_ipv4() {
            assert_eq!(checksum(&out[p.l3..p.l4]), 0, "IPv4 header checksum verifies");
            assert_eq!(out[p.l3 + 8], TTL);
        } else {
            assert_eq!(out[p.l3 + 7], TTL);
        }
    }

    #[test]
    fn rfc1071_known_ipv4_header() {
        // A well-known worked example: header checksum 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        let mut with = hdr;
        with[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&with), 0);
    }

    #[test]
    fn incremental_equals_recomputed() {
        let data = [0x12u8, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
        let c = checksum(&data);
        let mut new = data;
        new[2..6].copy_from_slice(&[0xff, 0xff, 0x00, 0x01]);
        assert_eq!(checksum_replace(c, &data[2..6], &new[2..6]), checksum(&new));
    }

    #[test]
    fn rewrites_ipv4_with_checksums() {
        let payload = [0x80u8, 0, 0, 1, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3];
        let mut f = frame(a("10.1.0.2:4000"), a("10.1.0.1:30000"), &payload, false);
        let p = parse(&f).unwrap();
        assert_eq!(p.src, a("10.1.0.2:4000"));
        assert_eq!(p.dst, a("10.1.0.1:30000"));
        assert_eq!(&f[p.payload.clone()], &payload);
        rewrite(&mut f, &p, &L2X, a("10.2.0.1:30002"), a("10.2.0.2:5000"), Checksum::Incremental).unwrap();
        expect_same_as_fresh(&f, a("10.2.0.1:30002"), a("10.2.0.2:5000"), &payload);
    }

    #[test]
    fn zero_udp_checksum_stays_zero_over_ipv4() {
        let mut f = frame(a("10.1.0.2:4000"), a("10.1.0.1:30000"), b"hello", true);
        let p = parse(&f).unwrap();
        rewrite(&mut f, &p, &L2X, a("10.2.0.1:30002"), a("10.2.0.2:5000"), Checksum::Incremental).unwrap();
        let p = parse(&f).unwrap();
        assert_eq!(&f[p.l4 + 6..p.l4 + 8], &[0, 0]);
        assert_eq!(checksum(&f[p.l3..p.l4]), 0);
        assert_eq!((p.src, p.dst), (a("10.2.0.1:30002"), a("10.2.0.2:5000")));
    }

    #[test]
    fn rewrites_ipv6_and_fills_a_zero_checksum() {
        let payload = [0x80u8, 8, 0, 9, 0, 0, 1, 0, 1, 2, 3, 4];
        let (s, d) = (a("[2001:db8:1::2]:4000"), a("[2001:db8:1::1]:30000"));
        let (ns, nd) = (a("[2001:db8:2::1]:30002"), a("[2001:db8:2::2]:5000"));
        let mut f = frame(s, d, &payload, false);
        let p = parse(&f).unwrap();
        rewrite(&mut f, &p, &L2X, ns, nd, Checksum::Incremental).unwrap();
        expect_same_as_fresh(&f, ns, nd, &payload);
        // An (invalid) zero IPv6 UDP checksum is replaced by a real one.
        let mut f = frame(s, d, &payload, true);
        let p = parse(&f).unwrap();
        rewrite(&mut f, &p, &L2X, ns, nd, Checksum::Incremental).unwrap();
        expect_same_as_fresh(&f, ns, nd, &payload);
    }

    #[test]
    fn full_mode_repairs_a_partial_checksum_and_keeps_a_zero_one() {
        // A locally sent frame carries only the pseudo-header sum: any
        // value that is not the real checksum stands for it here.
        for (s, d, ns, nd) in [
            ("10.1.0.2:4000", "10.1.0.1:30000", "10.2.0.1:30002", "10.2.0.2:5000"),
            ("[2001:db8:1::2]:4000", "[2001:db8:1::1]:30000", "[2001:db8:2::1]:30002", "[2001:db8:2::2]:5000"),
        ] {
            let mut f = frame(a(s), a(d), b"payload!", false);
            let p = parse(&f).unwrap();
            f[p.l4 + 6] ^= 0x5a;
            let mut inc = f.clone();
            rewrite(&mut f, &p, &L2X, a(ns), a(nd), Checksum::Full).unwrap();
            expect_same_as_fresh(&f, a(ns), a(nd), b"payload!");
            rewrite(&mut inc, &p, &L2X, a(ns), a(nd), Checksum::Incremental).unwrap();
            let udp = &inc[p.l4..p.payload.end];
            assert_ne!(u16::from_be_bytes([udp[6], udp[7]]), udp_checksum(a(ns).ip(), a(nd).ip(), udp));
        }
        let mut f = frame(a("10.1.0.2:4000"), a("10.1.0.1:30000"), b"x", true);
        let p = parse(&f).unwrap();
        rewrite(&mut f, &p, &L2X, a("10.2.0.1:30002"), a("10.2.0.2:5000"), Checksum::Full).unwrap();
        assert_eq!(&f[p.l4 + 6..p.l4 + 8], &[0, 0]);
    }

    #[test]
    fn family_change_is_refused_and_leaves_the_frame() {
        let mut f = frame(a("10.1.0.2:4000"), a("10.1.0.1:30000"), b"x", false);
        let before = f.clone();
        let p = parse(&f).unwrap();
        assert_eq!(
            rewrite(&mut f, &p, &L2X, a("[2001:db8::1]:30002"), a("[2001:db8::2]:5000"), Checksum::Full),
            Err(RewriteError::FamilyMismatch)
        );
        assert_eq!(f, before);
    }

    /// `f` after `room` bytes of headroom.
    fn with_room(room: usize, f: &[u8]) -> Vec<u8> {
        let mut b = vec![0xee; room];
        b.extend_from_slice(f);
        b
    }

    #[test]
    fn translates_ipv4_to_ipv6_and_back_keeping_the_traffic_class() {
        let payload = [0x80u8, 0, 0, 1, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3];
        let (s4, d4) = (a("10.1.0.2:4000"), a("10.1.0.1:30000"));
        let (s6, d6) = (a("[fd77:2::1]:30002"), a("[fd77:2::2]:5000"));
        let (s4b, d4b) = (a("10.1.0.1:30000"), a("10.1.0.2:4000"));
        for (zero, mode) in [(false, Checksum::Incremental), (true, Checksum::Incremental), (false, Checksum::Full)] {
            let mut f = frame(s4, d4, &payload, zero);
            let p = parse(&f).unwrap();
            // Ethernet padding after the datagram is left out.
            f.extend_from_slice(&[0; 6]);
            let mut buf = with_room(64, &f);
            let r = translate(&mut buf, 64, &p, &L2X, s6, d6, mode).unwrap();
            assert_eq!(r, 64 - TRANSLATE_GROWTH..64 + f.len() - 6);
            expect_same_as_fresh(&buf[r.clone()], s6, d6, &payload);
            let ip6 = &buf[r.start + ETH_LEN..];
            assert_eq!(((ip6[0] & 0x0f) << 4) | (ip6[1] >> 4), 0xb8, "DSCP EF kept");
            let back = parse(&buf[r.clone()]).unwrap();
            let r2 = translate(&mut buf, r.start, &back, &L2X, s4b, d4b, mode).unwrap();
            assert_eq!(r2, r.start + TRANSLATE_GROWTH..r.end);
            expect_same_as_fresh(&buf[r2.clone()], s4b, d4b, &payload);
            let ip4 = &buf[r2.start + ETH_LEN..];
            assert_eq!((ip4[1], ip4[6]), (0xb8, 0x40), "DSCP kept, DF set");
        }
    }

    #[test]
    fn translation_drops_ipv4_options() {
        let (s4, d4) = (a("10.1.0.2:4000"), a("10.1.0.1:30000"));
        let (s6, d6) = (a("[fd77:2::1]:30002"), a("[fd77:2::2]:5000"));
        let plain = frame(s4, d4, b"with options", false);
        // Four bytes of options (NOPs) after the 20-byte header.
        let mut f = plain[..ETH_LEN + IPV4_MIN].to_vec();
        f.extend_from_slice(&[1, 1, 1, 1]);
        f.extend_from_slice(&plain[ETH_LEN + IPV4_MIN..]);
        f[ETH_LEN] = 0x46;
        let total = u16::from_be_bytes([f[ETH_LEN + 2], f[ETH_LEN + 3]]) + 4;
        f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total.to_be_bytes());
        f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&[0, 0]);
        let hc = checksum(&f[ETH_LEN..ETH_LEN + 24]);
        f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&hc.to_be_bytes());
        let p = parse(&f).unwrap();
        assert_eq!(p.l4, ETH_LEN + 24);
        let mut buf = with_room(TRANSLATE_GROWTH, &f);
        let r = translate(&mut buf, TRANSLATE_GROWTH, &p, &L2X, s6, d6, Checksum::Incremental).unwrap();
        assert_eq!(r.start, TRANSLATE_GROWTH + 24 - IPV6_LEN);
        expect_same_as_fresh(&buf[r], s6, d6, b"with options");
    }

    #[test]
    fn translation_without_room_or_to_the_same_family_leaves_the_frame() {
        let f = frame(a("10.1.0.2:4000"), a("10.1.0.1:30000"), b"x", false);
        let p = parse(&f).unwrap();
        let (s6, d6) = (a("[fd77:2::1]:30002"), a("[fd77:2::2]:5000"));
        let mut buf = with_room(TRANSLATE_GROWTH - 1, &f);
        let before = buf.clone();
        let head = TRANSLATE_GROWTH - 1;
        assert_eq!(translate(&mut buf, head, &p, &L2X, s6, d6, Checksum::Full), Err(RewriteError::NoRoom));
        let (s4, d4) = (a("10.2.0.1:30002"), a("10.2.0.2:5000"));
        assert_eq!(translate(&mut buf, head, &p, &L2X, s4, d4, Checksum::Full), Err(RewriteError::FamilyMismatch));
        assert_eq!(translate(&mut buf, head, &p, &L2X, s6, d4, Checksum::Full), Err(RewriteError::FamilyMismatch));
        assert_eq!(buf, before);
        // IPv6 to IPv4 shrinks: no headroom needed.
        let f6 = frame(a("[fd77:2::2]:5000"), a("[fd77:2::1]:30002"), b"x", false);
        let mut buf6 = f6.clone();
        let r = translate(&mut buf6, 0, &parse(&f6).unwrap(), &L2X, s4, d4, Checksum::Incremental).unwrap();
        assert_eq!(r, TRANSLATE_GROWTH..f6.len());
        expect_same_as_fresh(&buf6[r], s4, d4, b"x");
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let good = frame(a("10.1.0.2:4000"), a("10.1.0.1:30000"), b"abcdef", false);
        for n in 0..good.len() {
            assert!(parse(&good[..n]).is_err(), "truncated to {n}");
        }
        // Ethernet padding after the datagram is fine and excluded.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(parse(&padded).unwrap().payload, parse(&good).unwrap().payload);
        let mut tcp = good.clone();
        tcp[14 + 9] = 6;
        assert_eq!(parse(&tcp), Err(ParseError::NotUdp));
        let mut frag = good.clone();
        frag[14 + 6] = 0x20; // MF
        assert_eq!(parse(&frag), Err(ParseError::NotUdp));
        // One VLAN tag: parsed (for the kernel path), flagged.
        let mut vlan = good[..12].to_vec();
        vlan.extend_from_slice(&ETH_P_VLAN.to_be_bytes());
        vlan.extend_from_slice(&[0x00, 0x64]);
        vlan.extend_from_slice(&good[12..]);
        let p = parse(&vlan).unwrap();
        assert!(p.vlan && !parse(&good).unwrap().vlan);
        assert_eq!((p.l3, p.src, p.dst), (18, a("10.1.0.2:4000"), a("10.1.0.1:30000")));
        assert_eq!(&vlan[p.payload.clone()], b"abcdef");
        // Two tags (QinQ) are not ours.
        let mut qinq = vlan[..12].to_vec();
        qinq.extend_from_slice(&ETH_P_QINQ.to_be_bytes());
        qinq.extend_from_slice(&[0x00, 0x01]);
        qinq.extend_from_slice(&vlan[12..]);
        assert_eq!(parse(&qinq), Err(ParseError::NotIp));
        let mut short_udp = good;
        short_udp[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(parse(&short_udp), Err(ParseError::Truncated));
    }

    proptest! {
        #[test]
        fn incremental_matches_full_v4(
            sa in any::<[u8; 4]>(), da in any::<[u8; 4]>(), nsa in any::<[u8; 4]>(), nda in any::<[u8; 4]>(),
            ports in any::<[u16; 4]>(), payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let s = SocketAddr::new(IpAddr::from(sa), ports[0]);
            let d = SocketAddr::new(IpAddr::from(da), ports[1]);
            let ns = SocketAddr::new(IpAddr::from(nsa), ports[2]);
            let nd = SocketAddr::new(IpAddr::from(nda), ports[3]);
            let mut f = frame(s, d, &payload, false);
            let p = parse(&f).unwrap();
            rewrite(&mut f, &p, &L2X, ns, nd, Checksum::Incremental).unwrap();
            expect_same_as_fresh(&f, ns, nd, &payload);
        }

        #[test]
        fn translation_matches_a_fresh_frame(
            v4 in any::<[[u8; 4]; 2]>(), v6 in any::<[[u8; 16]; 2]>(), ports in any::<[u16; 4]>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64), zero in any::<bool>(),
        ) {
            let (s4, d4) = (SocketAddr::new(IpAddr::from(v4[0]), ports[0]), SocketAddr::new(IpAddr::from(v4[1]), ports[1]));
            let (s6, d6) = (SocketAddr::new(IpAddr::from(v6[0]), ports[2]), SocketAddr::new(IpAddr::from(v6[1]), ports[3]));
            for ((s, d), (ns, nd)) in [((s4, d4), (s6, d6)), ((s6, d6), (s4, d4))] {
                let f = frame(s, d, &payload, zero && s.is_ipv4());
                let mut buf = with_room(TRANSLATE_GROWTH, &f);
                let r = translate(&mut buf, TRANSLATE_GROWTH, &parse(&f).unwrap(), &L2X, ns, nd, Checksum::Incremental);
                expect_same_as_fresh(&buf[r.unwrap()], ns, nd, &payload);
            }
        }

        #[test]
        fn incremental_matches_full_v6(
            sa in any::<[u8; 16]>(), nsa in any::<[u8; 16]>(),
            ports in any::<[u16; 4]>(), payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let s = SocketAddr::new(IpAddr::from(sa), ports[0]);
            let d = SocketAddr::new("2001:db8::1".parse().unwrap(), ports[1]);
            let ns = SocketAddr::new(IpAddr::from(nsa), ports[2]);
            let nd = SocketAddr::new("2001:db8::2".parse().unwrap(), ports[3]);
            let mut f = frame(s, d, &payload, false);
            let p = parse(&f).unwrap();
            rewrite(&mut f, &p, &L2X, ns, nd, Checksum::Incremental).unwrap();
            expect_same_as_fresh(&f, ns, nd, &payload);
        }
    }
}
