//! A durable local spool: one directory of segment files holding
//! checksummed records, each with a sequence number, plus a persisted
//! "sent" position. What must reach a remote collector (CDRs, stored
//! MESSAGEs) is appended here first and forwarded from here.
//!
//! Layout of the directory:
//! - `seg-<first seq, 20 digits>.spool`: records in seq order (see
//!   [`record`] for the format). A new segment starts when the active one
//!   would grow past `segment_bytes`.
//! - `sent`: the position below which every record is sent (8 bytes LE and
//!   a CRC-32), replaced atomically (write a temporary file, fsync, rename,
//!   fsync the directory).
//!
//! Durability: with [`SyncMode::Always`] (the default), `append` calls
//! `fdatasync` on the segment before it returns, so a record whose append
//! returned survives `kill -9` and a power cut. We chose one fdatasync per
//! record over group commit because records arrive one per call end (tens
//! to a few hundred per second, not per packet), the caller needs "durable
//! when it returns" to answer for the record, and a group commit would
//! make the caller wait for the group's sync anyway; an fdatasync of a
//! small append took 0.12 ms (p50) on the development VM's disk, and the
//! spool cost 0.98x to 1.15x the sbc's CPU per call (`bench/cdr-spool.sh`,
//! `docs/benchmarks.md`).
//! [`SyncMode::Never`] leaves flushing to the kernel: the record then
//! survives `kill -9` of the process (it is in the page cache) but not a
//! power cut.
//!
//! Recovery (`open`): every segment is scanned; the first record that is
//! short, fails its checksum or breaks the sequence ends the segment, which
//! is cut there (logged at warn with the reason). Nothing before it is lost.

pub mod record;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use record::{Entry, HEADER, MAX_PAYLOAD};

/// When appended records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `fdatasync` before `append` returns.
    #[default]
    Always,
    /// No sync: survives a process crash, not a power cut.
    Never,
}

/// Spool sizes and durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// A segment is closed once it would grow past this.
    pub segment_bytes: u64,
    /// `append` fails with [`SpoolError::Full`] past this many bytes on disk.
    pub max_bytes: u64,
    /// When records reach the disk.
    pub sync: SyncMode,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self { segment_bytes: 4 << 20, max_bytes: 1 << 30, sync: SyncMode::Always }
    }
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The spool holds `max_bytes` already.
    #[error("spool full ({bytes} bytes, limit {max})")]
    Full {
        /// Bytes on disk.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The payload is longer than a record may be.
    #[error("record of {0} bytes is too large")]
    TooLarge(usize),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

/// Spool figures for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Records not yet sent.
    pub records: u64,
    /// Bytes on disk (all segments, sent records of the oldest segment included).
    pub bytes: u64,
    /// The oldest unsent record: its seq and append time.
    pub oldest_unsent: Option<(u64, SystemTime)>,
}

struct Segment {
    first_seq: u64,
    path: PathBuf,
    len: u64,
    entries: Vec<Entry>,
}

/// A durable spool in one directory. See the module documentation.
pub struct Spool {
    dir: PathBuf,
    opts: SpoolOptions,
    segments: VecDeque<Segment>,
    active: File,
    next_seq: u64,
    sent: u64,
    bytes: u64,
    buf: Vec<u8>,
}

fn seg_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.spool")
}

fn parse_seg_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?.strip_suffix(".spool")?.parse().ok()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Spool {
    /// Opens (creating) the spool in `dir` and recovers it: scans every
    /// segment and cuts a damaged tail, logging why.
    ///
    /// # Errors
    /// When the directory or a segment cannot be read or written.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let sent = read_sent(dir);
        let mut firsts: Vec<u64> = Vec::new();
        for ent in fs::read_dir(dir).map_err(io(dir))? {
            let ent = ent.map_err(io(dir))?;
            if let Some(s) = ent.file_name().to_str().and_then(parse_seg_name) {
                firsts.push(s);
            }
        }
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        let mut next_seq = sent.unwrap_or(1).max(1);
        for first in firsts {
            let path = dir.join(seg_name(first));
            let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io(&path))?;
            let scan = record::scan(&file, first).map_err(io(&path))?;
            let on_disk = file.metadata().map_err(io(&path))?.len();
            if let Some(why) = &scan.damage {
                tracing::warn!(
                    segment = %path.display(),
                    reason = %why,
                    kept_records = scan.entries.len(),
                    cut_bytes = on_disk - scan.good_len,
                    "spool: damaged tail cut off"
                );
                file.set_len(scan.good_len).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
            }
            let mut entries = scan.entries;
            // Records must continue the sequence of the segment before.
            if let Some(e) = entries.first() {
                if e.seq < next_seq && !segments.is_empty() {
                    tracing::warn!(segment = %path.display(), "spool: segment overlaps the one before; ignored");
                    entries.clear();
                }
            }
            if let Some(last) = entries.last() {
                next_seq = next_seq.max(last.seq + 1);
            } else {
                next_seq = next_seq.max(first);
            }
            segments.push_back(Segment { first_seq: first, path, len: scan.good_len, entries });
        }
        let sent = sent.unwrap_or_else(|| segments.front().map_or(1, |s| s.first_seq)).min(next_seq);
        let (active, segments) = if let Some(last) = segments.back() {
            let f = OpenOptions::new().append(true).open(&last.path).map_err(io(&last.path))?;
            (f, segments)
        } else {
            let path = dir.join(seg_name(next_seq));
            let f = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
            sync_dir(dir)?;
            let mut segs = VecDeque::new();
            segs.push_back(Segment { first_seq: next_seq, path, len: 0, entries: Vec::new() });
            (f, segs)
        };
        let bytes = segments.iter().map(|s| s.len).sum();
        let mut spool = Self { dir: dir.to_path_buf(), opts, segments, active, next_seq, sent, bytes, buf: Vec::new() };
        spool.drop_sent_segments()?;
        Ok(spool)
    }

    /// Appends one record and returns its seq. With [`SyncMode::Always`]
    /// the record is on disk when this returns.
    ///
    /// # Errors
    /// [`SpoolError::Full`] past `max_bytes`, [`SpoolError::TooLarge`], or
    /// an I/O error (the record is then not in the spool).
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, SpoolError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(SpoolError::TooLarge(payload.len()));
        }
        let rec_len = (HEADER + payload.len()) as u64;
        if self.bytes + rec_len > self.opts.max_bytes {
            return Err(SpoolError::Full { bytes: self.bytes, max: self.opts.max_bytes });
        }
        let active_len = self.segments.back().map_or(0, |s| s.len);
        if active_len > 0 && active_len + rec_len > self.opts.segment_bytes {
            self.roll()?;
        }
        let seq = self.next_seq;
        let ts = now_ms();
        let mut buf = std::mem::take(&mut self.buf);
        record::encode(&mut buf, seq, ts, payload);
        let res = self.write_active(&buf);
        self.buf = buf;
        res?;
        let seg = self.segments.back_mut().expect("the spool always has an active segment");
        seg.entries.push(Entry { offset: seg.len, seq, ts_ms: ts });
        seg.len += rec_len;
        self.bytes += rec_len;
        self.next_seq += 1;
        Ok(seq)
    }

    fn write_active(&mut self, rec: &[u8]) -> Result<(), SpoolError> {
        let seg = self.segments.back().expect("the spool always has an active segment");
        let path = seg.path.clone();
        let good = seg.len;
        let res = self.active.write_all(rec).and_then(|()| match self.opts.sync {
            SyncMode::Always => self.active.sync_data(),
            SyncMode::Never => Ok(()),
        });
        if let Err(e) = res {
            // Leave no half record behind for the next append to follow.
            let _ = self.active.set_len(good);
            return Err(SpoolError::Io { path, source: e });
        }
        Ok(())
    }

    fn roll(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join(seg_name(self.next_seq));
        let f = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        sync_dir(&self.dir)?;
        self.active = f;
        self.segments.push_back(Segment { first_seq: self.next_seq, path, len: 0, entries: Vec::new() });
        Ok(())
    }

    /// Up to `max` records with seq `>= seq`, in order.
    ///
    /// # Errors
    /// When a segment cannot be read.
    pub fn read_from(&self, seq: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        for seg in &self.segments {
            if out.len() >= max {
                break;
            }
            let Some(last) = seg.entries.last() else { continue };
            if last.seq < seq {
                continue;
            }
            let start = seg.entries.partition_point(|e| e.seq < seq);
            let file = File::open(&seg.path).map_err(io(&seg.path))?;
            for (i, e) in seg.entries.iter().enumerate().skip(start) {
                if out.len() >= max {
                    break;
                }
                let end = seg.entries.get(i + 1).map_or(seg.len, |n| n.offset);
                let mut rec = vec![0u8; usize::try_from(end - e.offset).unwrap_or(0)];
                file.read_exact_at(&mut rec, e.offset).map_err(io(&seg.path))?;
                rec.drain(..HEADER);
                out.push((e.seq, rec));
            }
        }
        Ok(out)
    }

    /// Everything below this seq is sent (persisted).
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The seq the next append gets.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Persists "everything below `seq` is sent" and deletes the segments
    /// that hold only sent records (never the active one). `seq` is capped
    /// at the next seq; it never moves back.
    ///
    /// # Errors
    /// When the position cannot be written or a segment deleted.
    pub fn set_sent(&mut self, seq: u64) -> Result<(), SpoolError> {
        let seq = seq.min(self.next_seq);
        if seq <= self.sent {
            return Ok(());
        }
        write_sent(&self.dir, seq)?;
        self.sent = seq;
        self.drop_sent_segments()
    }

    fn drop_sent_segments(&mut self) -> Result<(), SpoolError> {
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[1].first_seq <= self.sent {
            let seg = self.segments.pop_front().expect("two segments at least");
            fs::remove_file(&seg.path).map_err(io(&seg.path))?;
            self.bytes -= seg.len;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Records not yet sent, bytes on disk, the oldest unsent record.
    #[must_use]
    pub fn stats(&self) -> SpoolStats {
        let oldest = self.segments.iter().find_map(|s| {
            let i = s.entries.partition_point(|e| e.seq < self.sent);
            s.entries.get(i)
        });
        SpoolStats {
            records: self.next_seq - self.sent,
            bytes: self.bytes,
            oldest_unsent: oldest.map(|e| (e.seq, UNIX_EPOCH + Duration::from_millis(e.ts_ms))),
        }
    }

    /// The spool directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

const SENT: &str = "sent";

fn read_sent(dir: &Path) -> Option<u64> {
    let path = dir.join(SENT);
    let b = fs::read(&path).ok()?;
    if b.len() != 12 {
        tracing::warn!(path = %path.display(), "spool: sent position damaged; resending from the oldest record");
        return None;
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    let crc = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if crc32fast::hash(&a) != crc {
        tracing::warn!(path = %path.display(), "spool: sent position damaged; resending from the oldest record");
        return None;
    }
    Some(u64::from_le_bytes(a))
}

fn write_sent(dir: &Path, seq: u64) -> Result<(), SpoolError> {
    let tmp = dir.join("sent.tmp");
    let mut b = seq.to_le_bytes().to_vec();
    b.extend_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&b).and_then(|()| f.sync_data()).map_err(io(&tmp))?;
    let path = dir.join(SENT);
    fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests;
