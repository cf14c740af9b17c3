// What each media-relay fuzz target does with one input. Shared, through
// `include!`, by the cargo-fuzz targets (fuzz/fuzz_targets/) and by the
// corpus replay test (media-relay/tests/fuzz_corpus.rs), so both run the
// same code. Every function must return without panicking for any input.

use media_relay::control::{CallReport, MediaControl, RelayError, RelayTotals, SdpRequest};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Rewrites `text` as the relay would, anchoring every section; the first
/// input byte picks the address family and the flags.
fn sdp_rewrite(text: &[u8], flags: u8) -> Result<Vec<u8>, media_relay::sdp::SdpError> {
    let sdp = media_relay::sdp::Sdp::parse(text)?;
    let addr = if flags & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    };
    let ports: Vec<Option<u16>> = (0..sdp.media.len()).map(|i| Some(30_000 + 2 * (i as u16 % 1000))).collect();
    let rtcp: Vec<Option<u16>> =
        if flags & 2 == 0 { ports.iter().map(|p| p.map(|p| p + 1)).collect() } else { Vec::new() };
    let rw = media_relay::sdp::Rewrite {
        addr,
        ports: &ports,
        rtcp_ports: &rtcp,
        replace_origin: flags & 4 != 0,
        remove_ice: flags & 8 != 0,
    };
    for m in &sdp.media {
        let _ = m.remote_addr(&sdp);
        let _ = m.codec_names();
        if let Some(pt) = m.formats.first().and_then(|f| f.parse().ok()) {
            let _ = m.clock_rate(pt);
        }
    }
    media_relay::sdp::rewrite_parsed(text, &sdp, &rw)
}

/// SDP: parse, then rewrite; the rewritten SDP must parse again.
pub fn sdp(data: &[u8]) {
    let Some((&flags, text)) = data.split_first() else { return };
    if let Ok(out) = sdp_rewrite(text, flags) {
        let _ = media_relay::sdp::Sdp::parse(&out);
    }
}

/// A relay that binds nothing: offers and answers rewrite the SDP, the
/// rest reports an unknown call.
struct NoRelay;

impl MediaControl for NoRelay {
    fn offer(&self, req: &SdpRequest<'_>) -> Result<Vec<u8>, RelayError> {
        Ok(sdp_rewrite(req.sdp, 0)?)
    }
    fn answer(&self, req: &SdpRequest<'_>) -> Result<Vec<u8>, RelayError> {
        Ok(sdp_rewrite(req.sdp, 5)?)
    }
    fn delete(&self, _call_id: &str, _from_tag: Option<&str>) -> Result<CallReport, RelayError> {
        Err(RelayError::UnknownCall)
    }
    fn query(&self, _call_id: &str) -> Result<CallReport, RelayError> {
        Err(RelayError::UnknownCall)
    }
    fn list(&self, _limit: usize) -> Vec<String> {
        Vec::new()
    }
    fn totals(&self) -> RelayTotals {
        RelayTotals::default()
    }
}

/// bencode and the ng protocol: decode (owned, borrowed, prefix), encode
/// back, and dispatch the command to a relay that binds nothing.
pub fn ng(data: &[u8]) {
    use media_relay::bencode;
    let body = match media_relay::ng::split_cookie(data) {
        Some((_cookie, body)) => body,
        None => data,
    };
    if let Ok(v) = bencode::decode(body) {
        let again = bencode::decode(&v.to_bytes()).expect("re-encoded bencode decodes");
        assert_eq!(again, v, "bencode round trip");
        let counters = media_relay::ng::NgCounters::default();
        let reply = media_relay::ng::dispatch(&NoRelay, &v, &counters);
        let _ = reply.to_bytes();
    }
    if let Ok(v) = bencode::decode_ref(body) {
        let _ = v.to_value();
    }
    if let Ok((_, used)) = bencode::decode_prefix(body) {
        assert!(used <= body.len(), "decode_prefix consumed more than it was given");
    }
    let _ = bencode::decode_prefix_ref(body);
}

/// RTP and RTCP header parsing and the accessors the relay uses.
pub fn rtp(data: &[u8]) {
    use media_relay::rtp::{is_rtcp, RtcpPacket, RtpPacket};
    let _ = is_rtcp(data);
    if let Ok(p) = RtpPacket::new_checked(data) {
        let _ = (p.version(), p.padding(), p.extension(), p.marker(), p.payload_type());
        let _ = (p.sequence_number(), p.timestamp(), p.ssrc(), p.header_extension());
        for i in 0..=usize::from(p.csrc_count()) {
            let _ = p.csrc(i);
        }
        assert!(p.header_len() <= data.len(), "RTP header longer than the packet");
        let _ = p.payload();
    }
    // Several RTCP packets may share a datagram (compound RTCP).
    let mut rest = data;
    while let Ok(p) = RtcpPacket::new_checked(rest) {
        let _ = (p.version(), p.padding(), p.count(), p.packet_type(), p.length_words());
        let _ = (p.sender_ssrc(), p.sender_info());
        for i in 0..=usize::from(p.count()) {
            let _ = p.report_block(i);
        }
        let len = p.packet_len();
        if len == 0 || len > rest.len() {
            break;
        }
        rest = &rest[len..];
    }
    // The relay's report reader over the same bytes, from either leg, with
    // the time taken from the input so round trips get computed too.
    let mut legs = [media_relay::rtcp::RtcpState::default(), media_relay::rtcp::RtcpState::default()];
    let now = data.iter().take(8).fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    media_relay::rtcp::on_rtcp(&mut legs, 0, data, now);
    media_relay::rtcp::on_rtcp(&mut legs, 1, data, now.wrapping_add(1));
    media_relay::rtcp::on_rtcp(&mut legs, 0, data, now.wrapping_mul(3));
}

/// `AF_XDP` frame parsing, the in-place header rewrite and the IPv4/IPv6
/// translation, with the first input byte choosing the checksum mode.
pub fn afxdp_frame(data: &[u8]) {
    use media_relay::afxdp::rewrite::{parse, rewrite, translate, Checksum, L2, TRANSLATE_GROWTH};
    let Some((&flags, frame)) = data.split_first() else { return };
    let Ok(p) = parse(frame) else { return };
    assert!(
        p.l3 < p.l4 && p.l4 + 8 <= p.payload.start && p.payload.start <= p.payload.end && p.payload.end <= frame.len()
    );
    let mode = if flags & 1 == 0 { Checksum::Incremental } else { Checksum::Full };
    let l2 = L2 { src: [2, 0, 0, 0, 0, 1], dst: [2, 0, 0, 0, 0, 2] };
    let v4 = (SocketAddr::from(([192, 0, 2, 1], 30_000)), SocketAddr::from(([198, 51, 100, 7], 4000)));
    let v6 = (
        SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 30_000)),
        SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), 4000)),
    );
    let (same, other) = if p.src.is_ipv4() { (v4, v6) } else { (v6, v4) };
    let mut buf = frame.to_vec();
    let _ = rewrite(&mut buf, &p, &l2, same.0, same.1, mode);
    let _ = rewrite(&mut buf, &p, &l2, other.0, other.1, mode);
    let mut room = vec![0u8; TRANSLATE_GROWTH];
    room.extend_from_slice(frame);
    if let Ok(r) = translate(&mut room, TRANSLATE_GROWTH, &p, &l2, other.0, other.1, mode) {
        let _ = parse(&room[r]);
    }
}
