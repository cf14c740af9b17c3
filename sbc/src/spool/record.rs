//! The on-disk record format of a spool segment, and the scan that
//! recovers a segment's records.
//!
//! A record is a 24-byte header followed by the payload, all little endian:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | payload length |
//! | 4 | 4 | CRC-32 (IEEE) of bytes 0..4 and 8.. (length, seq, time, payload) |
//! | 8 | 8 | sequence number |
//! | 16 | 8 | append time, milliseconds since the Unix epoch |
//! | 24 | len | payload |

use std::fs::File;
use std::io::{BufReader, Read};

/// Header bytes before the payload.
pub const HEADER: usize = 24;

/// Longest payload a record may carry; a longer length field in a file is
/// damage, not a record.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// Encodes one record into `out` (cleared first).
pub fn encode(out: &mut Vec<u8>, seq: u64, ts_ms: u64, payload: &[u8]) {
    out.clear();
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts_ms.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = checksum(out);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(rec: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&rec[0..4]);
    h.update(&rec[8..]);
    h.finalize()
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length.
    pub len: usize,
    /// Stored checksum.
    pub crc: u32,
    /// Sequence number.
    pub seq: u64,
    /// Append time (ms since the epoch).
    pub ts_ms: u64,
}

/// Reads a header from its 24 bytes.
#[must_use]
pub fn header(b: &[u8; HEADER]) -> Header {
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    Header { len: u32_at(0) as usize, crc: u32_at(4), seq: u64_at(8), ts_ms: u64_at(16) }
}

/// Checks a whole record (header and payload, as read) against its checksum.
#[must_use]
pub fn valid(rec: &[u8]) -> bool {
    if rec.len() < HEADER {
        return false;
    }
    let stored = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
    stored == checksum(rec)
}

/// One record found by [`scan`]: where it starts, its seq and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Byte offset of the record in its segment.
    pub offset: u64,
    /// Sequence number.
    pub seq: u64,
    /// Append time (ms since the epoch).
    pub ts_ms: u64,
}

/// What a segment scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The valid records, in file order.
    pub entries: Vec<Entry>,
    /// Bytes of valid records: where the segment must be cut when `damage`
    /// is set.
    pub good_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub damage: Option<String>,
}

/// Reads every record of a segment from its start, stopping at the first
/// one that is short, fails its checksum, or breaks the sequence (each seq
/// must be one more than the one before, the first `>= first_seq`).
///
/// # Errors
/// An I/O error other than the file ending.
pub fn scan(file: &File, first_seq: u64) -> std::io::Result<Scan> {
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut out = Scan::default();
    let mut buf = Vec::new();
    let mut expect: Option<u64> = None;
    loop {
        let mut hb = [0u8; HEADER];
        let got = read_full(&mut r, &mut hb)?;
        if got == 0 {
            return Ok(out);
        }
        if got < HEADER {
            out.damage = Some(format!("torn header ({got} of {HEADER} bytes)"));
            return Ok(out);
        }
        let h = header(&hb);
        if h.len > MAX_PAYLOAD {
            out.damage = Some(format!("impossible length {}", h.len));
            return Ok(out);
        }
        buf.clear();
        buf.extend_from_slice(&hb);
        buf.resize(HEADER + h.len, 0);
        let got = read_full(&mut r, &mut buf[HEADER..])?;
        if got < h.len {
            out.damage = Some(format!("torn record seq {} ({got} of {} payload bytes)", h.seq, h.len));
            return Ok(out);
        }
        if !valid(&buf) {
            out.damage = Some(format!("checksum mismatch at offset {}", out.good_len));
            return Ok(out);
        }
        let in_order = match expect {
            Some(e) => h.seq == e,
            None => h.seq >= first_seq,
        };
        if !in_order {
            out.damage = Some(format!("sequence break: seq {} at offset {}", h.seq, out.good_len));
            return Ok(out);
        }
        out.entries.push(Entry { offset: out.good_len, seq: h.seq, ts_ms: h.ts_ms });
        out.good_len += (HEADER + h.len) as u64;
        expect = Some(h.seq + 1);
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_header_and_checksum() {
        let mut v = Vec::new();
        encode(&mut v, 42, 1_700_000_000_000, b"hello");
        assert_eq!(v.len(), HEADER + 5);
        let mut hb = [0u8; HEADER];
        hb.copy_from_slice(&v[..HEADER]);
        let h = header(&hb);
        assert_eq!((h.len, h.seq, h.ts_ms), (5, 42, 1_700_000_000_000));
        assert!(valid(&v));
        for i in 0..v.len() {
            if (4..8).contains(&i) {
                continue;
            }
            let mut bad = v.clone();
            bad[i] ^= 0x01;
            assert!(!valid(&bad), "flipping byte {i} must fail the checksum");
        }
    }
}
