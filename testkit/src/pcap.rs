//! Classic pcap files (Ethernet, microsecond timestamps): a writer, a
//! reader, and [`write_rtp_pcap`], a synthetic RTP stream for sipp's
//! `play_pcap_audio`.

use std::fs;
use std::io;
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;

/// One captured frame and its time since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Capture time.
    pub time: Duration,
    /// The frame, as captured.
    pub data: Vec<u8>,
}

/// A pcap file being built in memory; [`PcapWriter::save`] writes it.
pub struct PcapWriter {
    out: Vec<u8>,
}

impl Default for PcapWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PcapWriter {
    /// The global header: v2.4, snaplen 65535, Ethernet.
    pub fn new() -> PcapWriter {
        let mut out = Vec::with_capacity(4096);
        for word in [MAGIC_US, 0x0004_0002, 0, 0, 65_535, LINKTYPE_ETHERNET] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        PcapWriter { out }
    }

    /// Appends `frame`, captured at `time`.
    pub fn push(&mut self, time: Duration, frame: &[u8]) {
        let len = u32::try_from(frame.len()).expect("frame fits a pcap record");
        let secs = u32::try_from(time.as_secs()).expect("time fits a pcap record");
        for word in [secs, time.subsec_micros(), len, len] {
            self.out.extend_from_slice(&word.to_le_bytes());
        }
        self.out.extend_from_slice(frame);
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.out
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        fs::write(path, &self.out)
    }
}

/// Reads every record of a classic little-endian, microsecond pcap file.
pub fn read_pcap(path: &Path) -> io::Result<Vec<Record>> {
    parse_pcap(&fs::read(path)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// [`read_pcap`] on bytes.
pub fn parse_pcap(bytes: &[u8]) -> Result<Vec<Record>, String> {
    let word = |at: usize| -> Result<u32, String> {
        let b = bytes.get(at..at + 4).ok_or_else(|| format!("truncated at byte {at}"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if word(0)? != MAGIC_US {
        return Err("not a little-endian microsecond pcap file".into());
    }
    if word(20)? != LINKTYPE_ETHERNET {
        return Err(format!("link type {} is not Ethernet", word(20)?));
    }
    let mut records = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let (secs, micros, len) = (word(at)?, word(at + 4)?, word(at + 8)? as usize);
        let data = bytes.get(at + 16..at + 16 + len).ok_or_else(|| format!("record at byte {at} is cut short"))?;
        records.push(Record { time: Duration::new(secs.into(), micros * 1000), data: data.to_vec() });
        at += 16 + len;
    }
    Ok(records)
}

/// An Ethernet + IPv4 + UDP frame from `from` to `to` (IPv4 header
/// checksum set, UDP checksum 0, "none", which IPv4 allows).
pub fn udp4_frame(from: SocketAddrV4, to: SocketAddrV4, ip_id: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).expect("payload fits a datagram");
    let mut ip = vec![0x45, 0x00];
    ip.extend_from_slice(&(20 + udp_len).to_be_bytes());
    ip.extend_from_slice(&ip_id.to_be_bytes());
    ip.extend_from_slice(&[0x40, 0x00, 64, 17, 0, 0]); // DF, TTL 64, UDP, checksum
    ip.extend_from_slice(&from.ip().octets());
    ip.extend_from_slice(&to.ip().octets());
    let sum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());

    let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
    frame.extend_from_slice(&ip);
    for half in [from.port(), to.port(), udp_len, 0] {
        frame.extend_from_slice(&half.to_be_bytes());
    }
    frame.extend_from_slice(payload);
    frame
}

/// The Internet checksum (RFC 1071) of an IPv4 header.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes a pcap file holding `count` RTP packets of one stream: payload
/// type `pt`, `payload_len` payload bytes filled with `fill`, one every
/// `ptime_ms` milliseconds, the RTP timestamp advancing by `payload_len`
/// (right for 8 kHz G.711). Addresses and ports inside are placeholders:
/// sipp's `play_pcap_audio` replaces them with the call's media addresses.
pub fn write_rtp_pcap(path: &Path, count: u32, ptime_ms: u32, pt: u8, payload_len: usize, fill: u8) -> io::Result<()> {
    let from = "10.0.0.1:40000".parse().expect("literal");
    let to = "10.0.0.2:40002".parse().expect("literal");
    let ssrc = 0x5853_4243u32; // "XSBC"
    let start = Duration::from_secs(1_700_000_000);
    let mut pcap = PcapWriter::new();
    for i in 0..count {
        let mut rtp = vec![0x80, pt & 0x7f | if i == 0 { 0x80 } else { 0 }]; // marker on the first
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&(i.wrapping_mul(payload_len as u32)).to_be_bytes());
        rtp.extend_from_slice(&ssrc.to_be_bytes());
        rtp.resize(12 + payload_len, fill);
        let at = start + Duration::from_millis(u64::from(i) * u64::from(ptime_ms));
        pcap.push(at, &udp4_frame(from, to, i as u16, &rtp));
    }
    pcap.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_capture_reads_back() {
        let dir = crate::TestDir::new("testkit-pcap");
        let path = dir.join("rtp.pcap");
        write_rtp_pcap(&path, 3, 20, 8, 160, 0xd5).unwrap();
        let records = read_pcap(&path).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].time - records[0].time, Duration::from_millis(20));
        let frame = &records[2].data;
        assert_eq!(frame.len(), 14 + 20 + 8 + 12 + 160);
        assert_eq!(ipv4_checksum(&frame[14..34]), 0, "header checksum verifies");
        assert_eq!(&frame[44..46], &2u16.to_be_bytes(), "RTP sequence number");
        assert!(parse_pcap(&frame[..10]).is_err());
    }
}
