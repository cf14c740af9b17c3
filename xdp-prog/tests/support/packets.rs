//! Builders for the test frames: Ethernet (optionally VLAN-tagged), IPv4
//! (with options and fragment fields), IPv6, UDP, TCP, ICMP, ARP. Checksums
//! are left zero except the IPv4 header's; the program does not read them.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_8021Q: u16 = 0x8100;
pub const ETH_8021AD: u16 = 0x88a8;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_V6_FRAGMENT: u8 = 44;
pub const PROTO_ICMPV6: u8 = 58;
/// IPv4 flags/fragment-offset field values.
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// An Ethernet frame carrying `payload`.
pub fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = [&DST_MAC[..], &SRC_MAC[..], &ethertype.to_be_bytes()].concat();
    f.extend_from_slice(payload);
    f
}

/// An Ethernet frame with one VLAN tag (`tpid` 0x8100 or 0x88a8).
pub fn tagged(tpid: u16, vid: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut tag = [vid.to_be_bytes(), ethertype.to_be_bytes()].concat();
    tag.extend_from_slice(payload);
    eth(tpid, &tag)
}

/// An IPv4 packet; `frag` is the flags/fragment-offset field, `options`
/// (a multiple of 4 bytes) makes IHL > 5.
pub fn ipv4_with(src: &str, dst: &str, proto: u8, frag: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0, "options are whole 32-bit words");
    let src: Ipv4Addr = src.parse().unwrap();
    let dst: Ipv4Addr = dst.parse().unwrap();
    let header_len = 20 + options.len();
    let ihl = u8::try_from(header_len / 4).unwrap();
    let total = u16::try_from(header_len + payload.len()).unwrap();
    let mut p = vec![0x40 | ihl, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34]); // identification
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(options);
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv4 packet without options or fragmentation.
pub fn ipv4(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(src, dst, proto, 0, &[], payload)
}

/// An IPv6 packet with `next` as the next-header field.
pub fn ipv6(src: &str, dst: &str, next: u8, payload: &[u8]) -> Vec<u8> {
    let src: Ipv6Addr = src.parse().unwrap();
    let dst: Ipv6Addr = dst.parse().unwrap();
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// A UDP datagram from port 40000 carrying a minimal RTP header.
pub fn udp(dport: u16) -> Vec<u8> {
    let rtp = [0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
    let mut d =
        [40000u16.to_be_bytes(), dport.to_be_bytes(), u16::try_from(8 + rtp.len()).unwrap().to_be_bytes()].concat();
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&rtp);
    d
}

/// A TCP SYN from port 40000.
pub fn tcp_syn(dport: u16) -> Vec<u8> {
    let mut s = [40000u16.to_be_bytes(), dport.to_be_bytes()].concat();
    s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    s
}

/// An ICMP echo request (`kind` 8), or an `ICMPv6` one (`kind` 128).
pub fn echo(kind: u8) -> Vec<u8> {
    vec![kind, 0, 0, 0, 0, 1, 0, 1, b'p', b'i', b'n', b'g']
}

/// An ARP who-has request.
pub fn arp_request() -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    a.extend_from_slice(&SRC_MAC);
    a.extend_from_slice(&[198, 51, 100, 7]);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&[192, 0, 2, 10]);
    a
}

/// Ethernet + IPv4 + UDP to `dst:dport`.
pub fn udp4(src: &str, dst: &str, dport: u16) -> Vec<u8> {
    eth(ETH_IPV4, &ipv4(src, dst, PROTO_UDP, &udp(dport)))
}

/// Ethernet + IPv6 + UDP to `[dst]:dport`.
pub fn udp6(src: &str, dst: &str, dport: u16) -> Vec<u8> {
    eth(ETH_IPV6, &ipv6(src, dst, PROTO_UDP, &udp(dport)))
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap()
}
