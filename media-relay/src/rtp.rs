//! Zero-copy views of RTP and RTCP packets (RFC 3550) and the RFC 5761
//! rule that tells them apart on a shared port.
//!
//! This module owns header parsing and in-place header rewriting only; it
//! never allocates and never copies a payload. The views follow the smoltcp
//! `wire` pattern: a view wraps any `T: AsRef<[u8]>` (a `&[u8]`, a
//! `&mut [u8]`, a ring slot, ...), `new_checked` validates the lengths once
//! on ingress, and the accessors then read fields at fixed offsets.
//!
//! # Contract
//!
//! After [`RtpPacket::check_len`] (or [`RtcpPacket::check_len`]) has returned
//! `Ok`, no accessor or setter of that view panics. Views made with
//! `new_unchecked` on a buffer that was never checked may panic in any
//! accessor, as in smoltcp; use them only on buffers already validated
//! (for example a packet this process built itself).
//!
//! # SRTP
//!
//! The views work on SRTP/SRTCP too: the headers are in the clear, only the
//! payload is encrypted and an authentication tag trails it. Because of that
//! tag, [`RtpPacket::check_len`] does not validate the RTP padding count
//! (the last byte of an SRTP packet is part of the tag), and
//! [`RtpPacket::payload`] strips padding only when the count is plausible.

use thiserror::Error;

/// Byte offsets of the RTP fixed header.
mod field {
    /// Version (2 bits), padding (1), extension (1), CSRC count (4).
    pub const VPXCC: usize = 0;
    /// Marker (1 bit) and payload type (7 bits).
    pub const MPT: usize = 1;
    /// Sequence number, 16 bits.
    pub const SEQ: usize = 2;
    /// Media timestamp, 32 bits.
    pub const TIMESTAMP: usize = 4;
    /// Synchronisation source, 32 bits.
    pub const SSRC: usize = 8;
    /// Length of the fixed header; the CSRC list starts here.
    pub const HEADER_LEN: usize = 12;
    /// Length of one CSRC entry.
    pub const CSRC_LEN: usize = 4;
    /// Length of the header-extension preamble (profile + length in words).
    pub const EXT_PREAMBLE_LEN: usize = 4;
}

/// Byte offsets of the RTCP common header, sender info and report blocks.
mod rtcp_field {
    /// Version (2 bits), padding (1), report/source count (5).
    pub const VPC: usize = 0;
    /// Packet type, 8 bits.
    pub const PT: usize = 1;
    /// Length in 32-bit words minus one, 16 bits.
    pub const LENGTH: usize = 2;
    /// SSRC of the packet sender, 32 bits.
    pub const SSRC: usize = 4;
    /// Smallest packet this module accepts: common header plus SSRC.
    pub const MIN_LEN: usize = 8;
    /// The SR sender-info block starts here.
    pub const SENDER_INFO: usize = 8;
    /// Length of the SR sender-info block.
    pub const SENDER_INFO_LEN: usize = 20;
    /// First report block of an SR.
    pub const SR_BLOCKS: usize = SENDER_INFO + SENDER_INFO_LEN;
    /// First report block of an RR.
    pub const RR_BLOCKS: usize = 8;
    /// Length of one report block.
    pub const REPORT_BLOCK_LEN: usize = 24;
}

/// The only RTP/RTCP version in use (RFC 3550).
pub const VERSION: u8 = 2;
/// RTCP packet type: sender report.
pub const RTCP_SR: u8 = 200;
/// RTCP packet type: receiver report.
pub const RTCP_RR: u8 = 201;
/// RTCP packet type: source description.
pub const RTCP_SDES: u8 = 202;
/// RTCP packet type: goodbye.
pub const RTCP_BYE: u8 = 203;
/// RTCP packet type: application-defined.
pub const RTCP_APP: u8 = 204;

/// Why a buffer is not a usable RTP or RTCP packet. Small and `Copy`, for
/// the per-packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Malformed {
    /// The buffer ends before the fixed header, the CSRC list or the
    /// header-extension preamble.
    #[error("packet shorter than its header")]
    TooShort,
    /// The version field is not 2.
    #[error("RTP/RTCP version is not 2")]
    BadVersion,
    /// A length field (RTP header extension, RTCP length) points past the
    /// end of the buffer, or is too small to hold the fields it must hold.
    #[error("length field inconsistent with buffer")]
    BadLength,
}

#[inline]
fn be16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

#[inline]
fn be32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

#[inline]
fn get_be16(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    bytes.try_into().ok().map(u16::from_be_bytes)
}

#[inline]
fn get_be32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    bytes.try_into().ok().map(u32::from_be_bytes)
}

/// RFC 5761 §4 demultiplexing: `true` when `buf` is RTCP rather than RTP.
///
/// The rule looks at the version bits and the whole second byte (payload
/// type including the marker bit): version 2 and a second byte in
/// `192..=223` is RTCP. It is a classifier only; validate the packet with
/// [`RtcpPacket::new_checked`] afterwards.
#[inline]
#[must_use]
pub fn is_rtcp(buf: &[u8]) -> bool {
    match buf {
        [first, second, ..] => first >> 6 == VERSION && (192..=223).contains(second),
        _ => false,
    }
}

/// A read (and optionally write) view of one RTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    /// Wraps `buffer` without checking it. See the module contract.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` and validates it with [`Self::check_len`].
    ///
    /// # Errors
    /// Returns the [`Malformed`] reason from [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the version is 2 and that the fixed header, CSRC list and
    /// header extension (if any) fit in the buffer. After `Ok`, no accessor
    /// or setter of this view panics.
    ///
    /// The padding count is not checked (see the module docs on SRTP).
    ///
    /// # Errors
    /// [`Malformed::TooShort`] when the buffer ends inside the fixed header,
    /// the CSRC list or the extension preamble; [`Malformed::BadVersion`]
    /// when the version is not 2; [`Malformed::BadLength`] when the
    /// extension length points past the end of the buffer.
    pub fn check_len(&self) -> Result<(), Malformed> {
        let data = self.buffer.as_ref();
        if data.len() < field::HEADER_LEN {
            return Err(Malformed::TooShort);
        }
        if self.version() != VERSION {
            return Err(Malformed::BadVersion);
        }
        let ext_start = self.ext_start();
        if self.extension() {
            if data.len() < ext_start + field::EXT_PREAMBLE_LEN {
                return Err(Malformed::TooShort);
            }
        } else if data.len() < ext_start {
            return Err(Malformed::TooShort);
        }
        if data.len() < self.header_len() {
            return Err(Malformed::BadLength);
        }
        Ok(())
    }

    /// Consumes the view and returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (2 for valid packets).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VPXCC] >> 6
    }

    /// Padding flag (P).
    #[inline]
    pub fn padding(&self) -> bool {
        self.buffer.as_ref()[field::VPXCC] & 0x20 != 0
    }

    /// Header-extension flag (X).
    #[inline]
    pub fn extension(&self) -> bool {
        self.buffer.as_ref()[field::VPXCC] & 0x10 != 0
    }

    /// Number of CSRC entries (CC), 0..=15.
    #[inline]
    pub fn csrc_count(&self) -> u8 {
        self.buffer.as_ref()[field::VPXCC] & 0x0f
    }

    /// Marker bit (M).
    #[inline]
    pub fn marker(&self) -> bool {
        self.buffer.as_ref()[field::MPT] & 0x80 != 0
    }

    /// Payload type, 0..=127.
    #[inline]
    pub fn payload_type(&self) -> u8 {
        self.buffer.as_ref()[field::MPT] & 0x7f
    }

    /// Sequence number.
    #[inline]
    pub fn sequence_number(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQ)
    }

    /// Media timestamp.
    #[inline]
    pub fn timestamp(&self) -> u32 {
        be32(self.buffer.as_ref(), field::TIMESTAMP)
    }

    /// Synchronisation source identifier.
    #[inline]
    pub fn ssrc(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SSRC)
    }

    /// The `index`-th CSRC, or `None` when `index >= csrc_count()` or the
    /// buffer is too short.
    pub fn csrc(&self, index: usize) -> Option<u32> {
        if index >= usize::from(self.csrc_count()) {
            return None;
        }
        get_be32(self.buffer.as_ref(), field::HEADER_LEN + field::CSRC_LEN * index)
    }

    /// The header extension as `(profile, data)` when X is set and the
    /// extension fits in the buffer; `data` excludes the 4-byte preamble.
    pub fn header_extension(&self) -> Option<(u16, &[u8])> {
        if !self.extension() {
            return None;
        }
        let data = self.buffer.as_ref();
        let start = self.ext_start();
        let profile = get_be16(data, start)?;
        let words = get_be16(data, start + 2)?;
        let body = start + field::EXT_PREAMBLE_LEN;
        let body_data = data.get(body..body + 4 * usize::from(words))?;
        Some((profile, body_data))
    }

    /// Offset of the header extension (end of the CSRC list).
    #[inline]
    fn ext_start(&self) -> usize {
        field::HEADER_LEN + field::CSRC_LEN * usize::from(self.csrc_count())
    }

    /// Length of the whole header: 12 bytes, plus 4 per CSRC, plus the
    /// header extension (4-byte preamble and its length words) when X is
    /// set. Never larger than `12 + 60 + 4 + 4 * 65535`.
    pub fn header_len(&self) -> usize {
        let start = self.ext_start();
        if !self.extension() {
            return start;
        }
        // If the preamble is missing, count it anyway so that the result
        // exceeds the buffer and `check_len` rejects the packet.
        let words = get_be16(self.buffer.as_ref(), start + 2).unwrap_or(0);
        start + field::EXT_PREAMBLE_LEN + 4 * usize::from(words)
    }

    /// Number of trailing padding bytes: the last byte when P is set and
    /// that count is between 1 and the bytes after the header; else 0.
    fn padding_len(&self) -> usize {
        let data = self.buffer.as_ref();
        if !self.padding() {
            return 0;
        }
        let Some(&count) = data.last() else {
            return 0;
        };
        let count = usize::from(count);
        let room = data.len().saturating_sub(self.header_len());
        if count >= 1 && count <= room {
            count
        } else {
            0
        }
    }

    /// The payload: the bytes after [`Self::header_len`], without the
    /// padding when P is set and its count is plausible. Empty when the
    /// header does not fit in the buffer.
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let start = self.header_len();
        let end = data.len().saturating_sub(self.padding_len());
        data.get(start..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtpPacket<T> {
    /// Rewrites the sequence number.
    #[inline]
    pub fn set_sequence_number(&mut self, value: u16) {
        self.buffer.as_mut()[field::SEQ..field::SEQ + 2].copy_from_slice(&value.to_be_bytes());
    }

    /// Rewrites the media timestamp.
    #[inline]
    pub fn set_timestamp(&mut self, value: u32) {
        self.buffer.as_mut()[field::TIMESTAMP..field::TIMESTAMP + 4].copy_from_slice(&value.to_be_bytes());
    }

    /// Rewrites the SSRC.
    #[inline]
    pub fn set_ssrc(&mut self, value: u32) {
        self.buffer.as_mut()[field::SSRC..field::SSRC + 4].copy_from_slice(&value.to_be_bytes());
    }

    /// Rewrites the payload type (low 7 bits of `value`), keeping the marker.
    #[inline]
    pub fn set_payload_type(&mut self, value: u8) {
        let byte = &mut self.buffer.as_mut()[field::MPT];
        *byte = (*byte & 0x80) | (value & 0x7f);
    }

    /// Sets or clears the marker bit, keeping the payload type.
    #[inline]
    pub fn set_marker(&mut self, value: bool) {
        let byte = &mut self.buffer.as_mut()[field::MPT];
        *byte = (*byte & 0x7f) | if value { 0x80 } else { 0 };
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for RtpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// One RTCP reception report block (RFC 3550 §6.4.1), as found in SR and RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// SSRC of the source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256 units.
    pub fraction_lost: u8,
    /// Cumulative number of packets lost (24-bit signed; negative with
    /// duplicates).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (cycles << 16 | seq).
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (LSR).
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s (DLSR).
    pub dlsr: u32,
}

impl ReportBlock {
    fn parse(b: &[u8; rtcp_field::REPORT_BLOCK_LEN]) -> Self {
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        Self {
            ssrc: word(0),
            fraction_lost: b[4],
            // Sign-extend the 24-bit field by placing it in the top bytes
            // and shifting arithmetically.
            cumulative_lost: i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8,
            highest_seq: word(8),
            jitter: word(12),
            lsr: word(16),
            dlsr: word(20),
        }
    }
}

/// The sender-info block of an RTCP sender report (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp of the report (seconds << 32 | fraction).
    pub ntp_timestamp: u64,
    /// RTP timestamp corresponding to `ntp_timestamp`.
    pub rtp_timestamp: u32,
    /// Sender's packet count.
    pub packet_count: u32,
    /// Sender's payload octet count.
    pub octet_count: u32,
}

/// A read view of the first RTCP packet in a (compound) datagram.
///
/// The packet's own length is [`Self::packet_len`]; the next packet of a
/// compound starts there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RtcpPacket<T> {
    /// Wraps `buffer` without checking it. See the module contract.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` and validates it with [`Self::check_len`].
    ///
    /// # Errors
    /// Returns the [`Malformed`] reason from [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the version is 2, that the buffer holds the common header
    /// and sender SSRC, and that the length field covers at least the SSRC
    /// and does not point past the buffer. After `Ok`, no accessor panics.
    ///
    /// The packet type is not checked (use [`is_rtcp`] to classify).
    ///
    /// # Errors
    /// [`Malformed::TooShort`] under 8 bytes; [`Malformed::BadVersion`] when
    /// the version is not 2; [`Malformed::BadLength`] when the length field
    /// says fewer than 8 bytes or more than the buffer holds.
    pub fn check_len(&self) -> Result<(), Malformed> {
        let data = self.buffer.as_ref();
        if data.len() < 4 {
            return Err(Malformed::TooShort);
        }
        if self.version() != VERSION {
            return Err(Malformed::BadVersion);
        }
        if data.len() < rtcp_field::MIN_LEN {
            return Err(Malformed::TooShort);
        }
        let len = self.packet_len();
        if len < rtcp_field::MIN_LEN || len > data.len() {
            return Err(Malformed::BadLength);
        }
        Ok(())
    }

    /// Consumes the view and returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (2 for valid packets).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[rtcp_field::VPC] >> 6
    }

    /// Padding flag (P).
    #[inline]
    pub fn padding(&self) -> bool {
        self.buffer.as_ref()[rtcp_field::VPC] & 0x20 != 0
    }

    /// Report count (SR/RR), source count (SDES/BYE) or subtype (APP,
    /// feedback): the low 5 bits of the first byte.
    #[inline]
    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[rtcp_field::VPC] & 0x1f
    }

    /// Packet type (200 = SR, 201 = RR, ...).
    #[inline]
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[rtcp_field::PT]
    }

    /// The raw length field: packet length in 32-bit words minus one.
    #[inline]
    pub fn length_words(&self) -> u16 {
        be16(self.buffer.as_ref(), rtcp_field::LENGTH)
    }

    /// Length of this packet in bytes, `(length_words + 1) * 4`.
    #[inline]
    pub fn packet_len(&self) -> usize {
        (usize::from(self.length_words()) + 1) * 4
    }

    /// SSRC of the sender (the first SSRC after the common header; for
    /// SDES and BYE that is the first chunk's or source's SSRC).
    #[inline]
    pub fn sender_ssrc(&self) -> u32 {
        be32(self.buffer.as_ref(), rtcp_field::SSRC)
    }

    /// The sender-info block when this is an SR long enough to hold it.
    pub fn sender_info(&self) -> Option<SenderInfo> {
        if self.packet_type() != RTCP_SR {
            return None;
        }
        let start = rtcp_field::SENDER_INFO;
        let end = start + rtcp_field::SENDER_INFO_LEN;
        if end > self.packet_len() {
            return None;
        }
        let data = self.buffer.as_ref();
        let ntp_high = get_be32(data, start)?;
        let ntp_low = get_be32(data, start + 4)?;
        Some(SenderInfo {
            ntp_timestamp: (u64::from(ntp_high) << 32) | u64::from(ntp_low),
            rtp_timestamp: get_be32(data, start + 8)?,
            packet_count: get_be32(data, start + 12)?,
            octet_count: get_be32(data, start + 16)?,
        })
    }

    /// The `index`-th report block of an SR or RR; `None` for other packet
    /// types, for `index >= count()`, or when the block does not fit inside
    /// [`Self::packet_len`] and the buffer.
    pub fn report_block(&self, index: usize) -> Option<ReportBlock> {
        let first = match self.packet_type() {
            RTCP_SR => rtcp_field::SR_BLOCKS,
            RTCP_RR => rtcp_field::RR_BLOCKS,
            _ => return None,
        };
        if index >= usize::from(self.count()) {
            return None;
        }
        // index < 32, so this cannot overflow.
        let start = first + rtcp_field::REPORT_BLOCK_LEN * index;
        let end = start + rtcp_field::REPORT_BLOCK_LEN;
        if end > self.packet_len() {
            return None;
        }
        let bytes: &[u8; rtcp_field::REPORT_BLOCK_LEN] = self.buffer.as_ref().get(start..end)?.try_into().ok()?;
        Some(ReportBlock::parse(bytes))
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for RtcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// V=2, no flags, CC=0, M=1, PT=96, seq=0x1234, ts=0xdeadbeef,
    /// ssrc=0x01020304, payload "abc".
    const BASIC: [u8; 15] = [0x80, 0xe0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, b'a', b'b', b'c'];

    #[test]
    fn basic_header_accessors() {
        let p = RtpPacket::new_checked(&BASIC[..]).expect("valid");
        assert_eq!(p.version(), 2);
        assert!(!p.padding());
        assert!(!p.extension());
        assert_eq!(p.csrc_count(), 0);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), 0x0102_0304);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.payload(), b"abc");
        assert_eq!(p.csrc(0), None);
        assert_eq!(p.header_extension(), None);
        assert_eq!(p.as_ref(), &BASIC[..]);
        assert_eq!(p.into_inner(), &BASIC[..]);
    }

    #[test]
    fn header_only_packet_has_empty_payload() {
        let p = RtpPacket::new_checked(&BASIC[..12]).expect("valid");
        assert_eq!(p.payload(), b"");
    }

    #[test]
    fn csrc_extension_and_padding() {
        let mut buf = vec![
            0xb2, // V=2, P=1, X=1, CC=2
            0x08, // M=0, PT=8
            0xff, 0xff, // seq 65535
            0x00, 0x00, 0x00, 0xa0, // ts 160
            0xca, 0xfe, 0xba, 0xbe, // ssrc
            0x11, 0x11, 0x11, 0x11, // csrc 0
            0x22, 0x22, 0x22, 0x22, // csrc 1
            0xbe, 0xde, 0x00, 0x02, // one-byte-header extension, 2 words
            0x10, 0xaa, 0x00, 0x00, 0x21, 0xbb, 0xcc, 0x00, // extension data
        ];
        let header_len = buf.len();
        assert_eq!(header_len, 12 + 8 + 4 + 8);
        buf.extend_from_slice(b"hello");
        buf.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let p = RtpPacket::new_checked(&buf[..]).expect("valid");
        assert!(p.padding());
        assert!(p.extension());
        assert!(!p.marker());
        assert_eq!(p.payload_type(), 8);
        assert_eq!(p.sequence_number(), 65535);
        assert_eq!(p.timestamp(), 160);
        assert_eq!(p.ssrc(), 0xcafe_babe);
        assert_eq!(p.csrc_count(), 2);
        assert_eq!(p.csrc(0), Some(0x1111_1111));
        assert_eq!(p.csrc(1), Some(0x2222_2222));
        assert_eq!(p.csrc(2), None);
        assert_eq!(p.header_len(), header_len);
        let (profile, ext) = p.header_extension().expect("extension");
        assert_eq!(profile, 0xbede);
        assert_eq!(ext, &[0x10, 0xaa, 0x00, 0x00, 0x21, 0xbb, 0xcc, 0x00]);
        assert_eq!(p.payload(), b"hello");
    }

    #[test]
    fn implausible_padding_is_kept_in_payload() {
        // P set but the count (200) exceeds the bytes after the header, as
        // happens when the last byte is an SRTP auth tag.
        let mut buf = BASIC.to_vec();
        buf[0] |= 0x20;
        buf.push(200);
        let p = RtpPacket::new_checked(&buf[..]).expect("valid");
        assert_eq!(p.payload(), &[b'a', b'b', b'c', 200]);
        // A zero count is not valid padding either.
        *buf.last_mut().expect("non-empty") = 0;
        let p = RtpPacket::new_checked(&buf[..]).expect("valid");
        assert_eq!(p.payload().len(), 4);
        // Padding covering the whole payload leaves it empty.
        *buf.last_mut().expect("non-empty") = 4;
        let p = RtpPacket::new_checked(&buf[..]).expect("valid");
        assert_eq!(p.payload(), b"");
    }

    #[test]
    fn malformed_rtp() {
        assert_eq!(RtpPacket::new_checked(&[][..]).err(), Some(Malformed::TooShort));
        assert_eq!(RtpPacket::new_checked(&BASIC[..11]).err(), Some(Malformed::TooShort));
        let mut v1 = BASIC;
        v1[0] = 0x40;
        assert_eq!(RtpPacket::new_checked(&v1[..]).err(), Some(Malformed::BadVersion));
        // CC=2 needs 20 bytes.
        let mut cc = BASIC;
        cc[0] = 0x82;
        assert_eq!(RtpPacket::new_checked(&cc[..]).err(), Some(Malformed::TooShort));
        // X set but no room for the preamble.
        let mut x = BASIC;
        x[0] = 0x90;
        assert_eq!(RtpPacket::new_checked(&x[..]).err(), Some(Malformed::TooShort));
        // X set, preamble says 1 word of data, but none follows.
        let mut xs = BASIC[..12].to_vec();
        xs[0] = 0x90;
        xs.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01]);
        assert_eq!(RtpPacket::new_checked(&xs[..]).err(), Some(Malformed::BadLength));
        xs.extend_from_slice(&[1, 2, 3, 4]);
        assert!(RtpPacket::new_checked(&xs[..]).is_ok());
    }

    #[test]
    fn setters_rewrite_in_place() {
        let mut buf = BASIC;
        let mut p = RtpPacket::new_checked(&mut buf[..]).expect("valid");
        p.set_sequence_number(0xbeef);
        p.set_timestamp(0x0a0b_0c0d);
        p.set_ssrc(0x5555_aaaa);
        p.set_payload_type(0x80 | 8); // high bit ignored
        assert!(p.marker(), "marker kept");
        assert_eq!(p.payload_type(), 8);
        p.set_marker(false);
        assert!(!p.marker());
        assert_eq!(p.payload_type(), 8, "payload type kept");
        p.set_marker(true);
        assert_eq!(p.sequence_number(), 0xbeef);
        assert_eq!(p.timestamp(), 0x0a0b_0c0d);
        assert_eq!(p.ssrc(), 0x5555_aaaa);
        assert_eq!(p.payload(), b"abc");
        assert_eq!(buf[..12], [0x80, 0x88, 0xbe, 0xef, 0x0a, 0x0b, 0x0c, 0x0d, 0x55, 0x55, 0xaa, 0xaa]);
    }

    #[test]
    fn rfc5761_demux() {
        let first_two = |pt: u8, marker: bool| [0x80, pt | if marker { 0x80 } else { 0 }, 0, 0];
        for pt in [0u8, 8, 96] {
            for marker in [false, true] {
                assert!(!is_rtcp(&first_two(pt, marker)), "pt {pt} marker {marker}");
            }
        }
        for pt in 200u8..=204 {
            assert!(is_rtcp(&[0x80, pt, 0, 1]), "rtcp type {pt}");
            // The same byte read as RTP is PT pt-128 with the marker set.
            assert!(is_rtcp(&first_two(pt - 128, true)), "pt {} with marker", pt - 128);
            assert!(!is_rtcp(&first_two(pt - 128, false)), "pt {} no marker", pt - 128);
        }
        // Edges of the range and non-RTP traffic.
        assert!(is_rtcp(&[0x80, 192]));
        assert!(is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 191]));
        assert!(!is_rtcp(&[0x80, 224]));
        assert!(!is_rtcp(&[0x00, 200]), "STUN-like first byte");
        assert!(!is_rtcp(&[0x16, 0xfe]), "DTLS record");
        assert!(!is_rtcp(&[0x80]));
        assert!(!is_rtcp(&[]));
    }

    fn report_block_bytes(ssrc: u32, fraction: u8, lost: [u8; 3], rest: [u32; 4]) -> Vec<u8> {
        let mut v = ssrc.to_be_bytes().to_vec();
        v.push(fraction);
        v.extend_from_slice(&lost);
        for w in rest {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v
    }

    #[test]
    fn rtcp_sender_report() {
        // SR, RC=1: 28 bytes header+sender info + 24 bytes block = 52 = 13 words.
        let mut buf = vec![0x81, 200, 0x00, 12, 0x11, 0x22, 0x33, 0x44];
        buf.extend_from_slice(&0xe8a0_0000_u32.to_be_bytes()); // NTP seconds
        buf.extend_from_slice(&0x8000_0000_u32.to_be_bytes()); // NTP fraction
        buf.extend_from_slice(&123_456_u32.to_be_bytes()); // RTP ts
        buf.extend_from_slice(&1000_u32.to_be_bytes()); // packets
        buf.extend_from_slice(&160_000_u32.to_be_bytes()); // octets
        buf.extend(report_block_bytes(0xaabb_ccdd, 64, [0x00, 0x01, 0x02], [0x0001_fffe, 37, 0x1234_5678, 65536]));
        // A trailing SDES packet of the compound must not confuse parsing.
        buf.extend_from_slice(&[0x81, 202, 0x00, 0x01, 0x11, 0x22, 0x33, 0x44]);
        let p = RtcpPacket::new_checked(&buf[..]).expect("valid");
        assert_eq!(p.version(), 2);
        assert!(!p.padding());
        assert_eq!(p.count(), 1);
        assert_eq!(p.packet_type(), RTCP_SR);
        assert_eq!(p.length_words(), 12);
        assert_eq!(p.packet_len(), 52);
        assert_eq!(p.sender_ssrc(), 0x1122_3344);
        assert_eq!(
            p.sender_info(),
            Some(SenderInfo {
                ntp_timestamp: 0xe8a0_0000_8000_0000,
                rtp_timestamp: 123_456,
                packet_count: 1000,
                octet_count: 160_000,
            })
        );
        assert_eq!(
            p.report_block(0),
            Some(ReportBlock {
                ssrc: 0xaabb_ccdd,
                fraction_lost: 64,
                cumulative_lost: 0x0102,
                highest_seq: 0x0001_fffe,
                jitter: 37,
                lsr: 0x1234_5678,
                dlsr: 65536,
            })
        );
        assert_eq!(p.report_block(1), None);
        // The next packet of the compound starts at packet_len.
        let next = RtcpPacket::new_checked(&buf[p.packet_len()..]).expect("sdes");
        assert_eq!(next.packet_type(), RTCP_SDES);
        assert_eq!(next.report_block(0), None);
        assert_eq!(next.sender_info(), None);
    }

    #[test]
    fn rtcp_receiver_report_with_negative_loss() {
        // RR, RC=2: 8 + 2*24 = 56 bytes = 14 words.
        let mut buf = vec![0x82, 201, 0x00, 13, 0xde, 0xad, 0xbe, 0xef];
        // -1 as 24-bit two's complement.
        buf.extend(report_block_bytes(1, 0, [0xff, 0xff, 0xff], [100, 0, 0, 0]));
        // -8388608 (most negative 24-bit value).
        buf.extend(report_block_bytes(2, 255, [0x80, 0x00, 0x00], [200, 1, 2, 3]));
        let p = RtcpPacket::new_checked(&buf[..]).expect("valid");
        assert_eq!(p.packet_type(), RTCP_RR);
        assert_eq!(p.count(), 2);
        assert_eq!(p.sender_ssrc(), 0xdead_beef);
        assert_eq!(p.sender_info(), None);
        let b0 = p.report_block(0).expect("block 0");
        assert_eq!((b0.ssrc, b0.fraction_lost, b0.cumulative_lost), (1, 0, -1));
        assert_eq!(b0.highest_seq, 100);
        let b1 = p.report_block(1).expect("block 1");
        assert_eq!(b1.cumulative_lost, -8_388_608);
        assert_eq!(b1.fraction_lost, 255);
        assert_eq!((b1.highest_seq, b1.jitter, b1.lsr, b1.dlsr), (200, 1, 2, 3));
        assert_eq!(p.report_block(2), None);
        // Largest positive 24-bit value.
        let max = report_block_bytes(3, 0, [0x7f, 0xff, 0xff], [0; 4]);
        let mut rr = vec![0x81, 201, 0x00, 7, 0, 0, 0, 0];
        rr.extend(max);
        let p = RtcpPacket::new_checked(&rr[..]).expect("valid");
        assert_eq!(p.report_block(0).map(|b| b.cumulative_lost), Some(8_388_607));
    }

    #[test]
    fn rtcp_count_larger_than_length_gives_none() {
        // RR claims 2 blocks but its length only covers one.
        let mut buf = vec![0x82, 201, 0x00, 7, 0, 0, 0, 1];
        buf.extend(report_block_bytes(1, 0, [0, 0, 1], [0; 4]));
        buf.extend(report_block_bytes(2, 0, [0, 0, 2], [0; 4])); // outside packet
        let p = RtcpPacket::new_checked(&buf[..]).expect("valid");
        assert!(p.report_block(0).is_some());
        assert_eq!(p.report_block(1), None);
        // SR too short to hold its sender info.
        let sr = [0x80, 200, 0x00, 1, 0, 0, 0, 1];
        let p = RtcpPacket::new_checked(&sr[..]).expect("valid");
        assert_eq!(p.sender_info(), None);
        assert_eq!(p.report_block(0), None);
    }

    #[test]
    fn malformed_rtcp() {
        assert_eq!(RtcpPacket::new_checked(&[][..]).err(), Some(Malformed::TooShort));
        assert_eq!(RtcpPacket::new_checked(&[0x80, 201, 0][..]).err(), Some(Malformed::TooShort));
        assert_eq!(RtcpPacket::new_checked(&[0x40, 201, 0, 1, 0, 0, 0, 0][..]).err(), Some(Malformed::BadVersion));
        assert_eq!(RtcpPacket::new_checked(&[0x80, 201, 0, 1, 0, 0][..]).err(), Some(Malformed::TooShort));
        // Length 0 = 4 bytes: no room for the sender SSRC.
        assert_eq!(RtcpPacket::new_checked(&[0x80, 203, 0, 0, 0, 0, 0, 0][..]).err(), Some(Malformed::BadLength));
        // Length 2 = 12 bytes but only 8 present.
        assert_eq!(RtcpPacket::new_checked(&[0x80, 201, 0, 2, 0, 0, 0, 0][..]).err(), Some(Malformed::BadLength));
        assert!(RtcpPacket::new_checked(&[0x80, 201, 0, 1, 0, 0, 0, 0][..]).is_ok());
    }

    fn touch_rtp(buf: &[u8]) {
        let _ = is_rtcp(buf);
        if let Ok(p) = RtpPacket::new_checked(buf) {
            let _ = (p.version(), p.padding(), p.extension(), p.csrc_count());
            let _ = (p.marker(), p.payload_type(), p.sequence_number());
            let _ = (p.timestamp(), p.ssrc(), p.header_len(), p.header_extension());
            for i in 0..17 {
                let _ = p.csrc(i);
            }
            let payload = p.payload();
            assert!(p.header_len() + payload.len() <= buf.len());
            let mut copy = buf.to_vec();
            let mut w = RtpPacket::new_unchecked(&mut copy[..]);
            w.set_sequence_number(1);
            w.set_timestamp(2);
            w.set_ssrc(3);
            w.set_payload_type(4);
            w.set_marker(true);
        }
    }

    fn touch_rtcp(buf: &[u8]) {
        if let Ok(p) = RtcpPacket::new_checked(buf) {
            let _ = (p.version(), p.padding(), p.count(), p.packet_type());
            let _ = (p.length_words(), p.sender_ssrc(), p.sender_info());
            assert!(p.packet_len() <= buf.len());
            for i in 0..33 {
                let _ = p.report_block(i);
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..96)) {
            touch_rtp(&buf);
            touch_rtcp(&buf);
        }

        #[test]
        fn version2_bytes_never_panic(
            mut buf in prop::collection::vec(any::<u8>(), 1..96),
            pt in prop_oneof![Just(RTCP_SR), Just(RTCP_RR), any::<u8>()],
            words in 0u16..24,
        ) {
            buf[0] = (buf[0] & 0x3f) | 0x80;
            if buf.len() >= 4 {
                buf[1] = pt;
                buf[2..4].copy_from_slice(&words.to_be_bytes());
            }
            touch_rtp(&buf);
            touch_rtcp(&buf);
        }
    }
}
