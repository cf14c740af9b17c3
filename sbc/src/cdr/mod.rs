//! Call detail records. Each CDR (one JSON object per call, made when the
//! call ends, with a deterministic [`cdr_id`]) goes:
//! 1. into the durable spool (`[cdr] spool_dir`) before anything else, from
//!    where the [`forward`] thread sends it to PostgreSQL;
//! 2. to the JSON-lines file (`[cdr] file`) when one is configured;
//! 3. when the spool refuses it (full, or a write error), to the JSON-lines
//!    file, or `<spool_dir>/overflow.jsonl` without one: never dropped. A
//!    full spool raises the `sbc_cdr_spool_full` alarm.

pub mod forward;
mod metrics;

pub use metrics::CdrMetrics;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use media_relay::control::CallReport;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Per-direction relay statistics of a call, as they go into a CDR.
#[must_use]
pub fn relay_stats(report: &CallReport) -> Value {
    let legs: Vec<Value> = report
        .legs
        .iter()
        .map(|leg| {
            let medias: Vec<Value> = leg
                .medias
                .iter()
                .map(|m| {
                    let s = &m.streams[0].stats;
                    let q = &m.quality;
                    // Quality of the media from this leg (issue 21); MOS
                    // null when no interval was scored.
                    let mos = |v: f64| (q.intervals > 0).then_some((v * 100.0).round() / 100.0);
                    json!({
                        "type": m.kind,
                        "codecs": m.codecs,
                        "packets": s.stats.packets,
                        "bytes": s.stats.bytes,
                        "expected": s.stats.expected,
                        "lost": s.stats.lost,
                        "duplicates": s.stats.duplicates,
                        "reordered": s.stats.reordered,
                        "jitter_us": s.stats.jitter_us,
                        "foreign_drops": s.foreign_drops,
                        "rtcp_packets": m.streams[1].stats.stats.packets,
                        "mos_min": mos(q.mos_min),
                        "mos_mean": mos(q.mos_mean),
                        "loss_pct": (q.loss_pct * 100.0).round() / 100.0,
                        "jitter_max_ms": (q.jitter_max_ms * 10.0).round() / 10.0,
                        "rtt_ms": q.rtt_ms.map(|r| (r * 10.0).round() / 10.0),
                        "one_way_audio": q.one_way,
                        "rtcp_fraction_lost": s.rtcp.fraction_lost,
                        "rtcp_cumulative_lost": s.rtcp.cumulative_lost,
                    })
                })
                .collect();
            json!({ "from_tag": leg.tag, "media": medias })
        })
        .collect();
    Value::Array(legs)
}

/// The CDR id: a UUID made from the Call-ID, the caller's From-tag and the
/// start time (whole Unix seconds), so the same call always gets the same
/// id, on this node and on an HA standby that ends a taken-over call (the
/// start time is replicated as float seconds: whole seconds survive the
/// round trip). SHA-256 truncated to 128 bits, marked as an RFC 9562
/// version 8 (custom) UUID.
#[must_use]
pub fn cdr_id(call_id: &str, from_tag: &str, start_unix_s: f64) -> String {
    let mut h = Sha256::new();
    h.update(call_id.as_bytes());
    h.update([0]);
    h.update(from_tag.as_bytes());
    h.update([0]);
    // Saturating float-to-int conversion; NaN gives 0.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let secs = start_unix_s.floor().max(0.0) as u64;
    h.update(secs.to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The spool side of a [`CdrWriter`], shared with the forwarder thread.
pub struct SpoolSink {
    /// The spool.
    pub spool: Arc<Mutex<crate::spool::Spool>>,
    /// Wakes the forwarder after an append.
    pub wake: Option<mpsc::SyncSender<()>>,
    /// Where refused CDRs go when no JSON-lines file is configured.
    pub overflow: PathBuf,
}

/// Writes CDRs: spool first, JSON lines as an output and as the fallback.
pub struct CdrWriter {
    file: Option<File>,
    path: String,
    sink: Option<SpoolSink>,
    overflow: Option<File>,
    metrics: Arc<CdrMetrics>,
}

impl CdrWriter {
    /// Opens (creating) the JSON-lines file for appending; `None` disables
    /// the file. No spool: see [`with_spool`](Self::with_spool).
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        Ok(Self {
            file,
            path: path.map(|p| p.display().to_string()).unwrap_or_default(),
            sink: None,
            overflow: None,
            metrics: Arc::new(CdrMetrics::default()),
        })
    }

    /// Adds the spool: every CDR goes there first.
    #[must_use]
    pub fn with_spool(mut self, sink: SpoolSink, metrics: Arc<CdrMetrics>) -> Self {
        if let Ok(s) = sink.spool.lock() {
            metrics.observe(&s.stats());
        }
        self.sink = Some(sink);
        self.metrics = metrics;
        self
    }

    /// The writer's counters.
    #[must_use]
    pub fn metrics(&self) -> &Arc<CdrMetrics> {
        &self.metrics
    }

    /// Writes one record. A write error is logged, never fatal to the call.
    pub fn write(&mut self, record: &Value) {
        // A NUL a peer smuggled into a header (a quoted-pair) would make
        // PostgreSQL refuse the whole batch (`jsonb` has no `\u0000`) and
        // stop forwarding: CDR strings never carry one.
        let mut clean = record.clone();
        strip_nul(&mut clean);
        let mut line = clean.to_string();
        let mut spooled = self.sink.is_none();
        if let Some(sink) = &self.sink {
            let res = match sink.spool.lock() {
                Ok(mut s) => {
                    let r = s.append(line.as_bytes());
                    self.metrics.observe(&s.stats());
                    r
                }
                Err(_) => Err(crate::spool::SpoolError::Io {
                    path: sink.overflow.clone(),
                    source: std::io::Error::other("spool lock poisoned"),
                }),
            };
            match res {
                Ok(_) => {
                    spooled = true;
                    self.metrics.set_full(false);
                    if let Some(w) = &sink.wake {
                        let _ = w.try_send(());
                    }
                }
                Err(crate::spool::SpoolError::Full { bytes, max }) => {
                    if !self.metrics.set_full(true) {
                        tracing::error!(bytes, max, "CDR spool full: CDRs go to the JSON-lines file only");
                    }
                    self.metrics.spool_refused();
                }
                Err(e) => {
                    tracing::error!(error = %e, "CDR spool append failed: CDR goes to the JSON-lines file only");
                    self.metrics.spool_refused();
                }
            }
        }
        line.push('\n');
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = f.write_all(line.as_bytes()) {
                tracing::error!(path = %self.path, error = %e, "CDR write failed");
            }
        } else if !spooled {
            self.write_overflow(&line);
        }
    }

    fn write_overflow(&mut self, line: &str) {
        let Some(sink) = &self.sink else { return };
        if self.overflow.is_none() {
            match OpenOptions::new().create(true).append(true).open(&sink.overflow) {
                Ok(f) => self.overflow = Some(f),
                Err(e) => {
                    tracing::error!(path = %sink.overflow.display(), error = %e, "CDR lost: overflow file");
                    return;
                }
            }
        }
        if let Some(f) = self.overflow.as_mut() {
            if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.sync_data()) {
                tracing::error!(path = %sink.overflow.display(), error = %e, "CDR lost: overflow file");
            }
        }
    }
}

/// Opens the spool of `[cdr] spool_dir` (recovering it), adds it to
/// `writer`, and starts the forwarder thread when a collector is set.
///
/// # Errors
/// When the spool cannot be opened or the thread started.
pub fn start_spool(
    writer: CdrWriter,
    cfg: &crate::config::CdrSpool,
    metrics: &Arc<CdrMetrics>,
    shutdown: &Arc<std::sync::atomic::AtomicBool>,
) -> Result<(CdrWriter, Option<std::thread::JoinHandle<()>>), String> {
    let spool = crate::spool::Spool::open(&cfg.dir, cfg.options).map_err(|e| format!("CDR spool: {e}"))?;
    let st = spool.stats();
    tracing::info!(dir = %cfg.dir.display(), unsent = st.records, bytes = st.bytes, "CDR spool open");
    let spool = Arc::new(Mutex::new(spool));
    let (wake, thread) = match &cfg.postgres {
        Some(pg) => {
            let (tx, rx) = mpsc::sync_channel(1);
            let f = forward::Forwarder {
                spool: Arc::clone(&spool),
                cfg: pg.clone(),
                metrics: Arc::clone(metrics),
                wake: rx,
                shutdown: Arc::clone(shutdown),
            };
            (Some(tx), Some(f.spawn().map_err(|e| format!("starting the CDR forwarder: {e}"))?))
        }
        None => (None, None),
    };
    let sink = SpoolSink { spool, wake, overflow: cfg.dir.join("overflow.jsonl") };
    Ok((writer.with_spool(sink, Arc::clone(metrics)), thread))
}

/// Replaces every NUL in the strings of `v` with U+FFFD.
fn strip_nul(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
        Value::Array(a) => a.iter_mut().for_each(strip_nul),
        Value::Object(o) => o.values_mut().for_each(strip_nul),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_never_reaches_a_cdr() {
        let mut v = serde_json::json!({"from": "a\0b", "relay": [{"x": "\0"}], "n": 1});
        strip_nul(&mut v);
        assert_eq!(v, serde_json::json!({"from": "a\u{fffd}b", "relay": [{"x": "\u{fffd}"}], "n": 1}));
        assert!(!v.to_string().contains("\\u0000"));
    }

    #[test]
    fn id_is_deterministic_and_distinct() {
        let a = cdr_id("abc@host", "tag1", 1_700_000_000.25);
        assert_eq!(a, cdr_id("abc@host", "tag1", 1_700_000_000.75), "whole seconds");
        assert_ne!(a, cdr_id("abc@host", "tag2", 1_700_000_000.25));
        assert_ne!(a, cdr_id("abc@host", "tag1", 1_700_000_001.0));
        assert_ne!(a, cdr_id("abc@hos", "ttag1", 1_700_000_000.25), "fields are separated");
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version 8");
    }

    fn temp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("xsbc-cdrw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn full_spool_sends_cdrs_to_json_lines_and_raises_the_alarm() {
        use crate::spool::{Spool, SpoolOptions, SyncMode};
        let dir = temp("full");
        let opts = SpoolOptions { segment_bytes: 100, max_bytes: 200, sync: SyncMode::Never };
        let spool = Arc::new(Mutex::new(Spool::open(&dir, opts).unwrap()));
        let m = Arc::new(CdrMetrics::default());
        let sink = SpoolSink { spool: Arc::clone(&spool), wake: None, overflow: dir.join("overflow.jsonl") };
        let mut w = CdrWriter::open(None).unwrap().with_spool(sink, Arc::clone(&m));
        for i in 0..5 {
            w.write(&serde_json::json!({ "id": i, "pad": "0123456789012345678901234567890123456789" }));
        }
        let in_spool = spool.lock().unwrap().stats().records;
        assert_eq!(in_spool, 2, "two records of ~80 bytes fit in 200");
        let over = std::fs::read_to_string(dir.join("overflow.jsonl")).unwrap();
        assert_eq!(over.lines().count(), 3);
        assert!(over.lines().all(|l| l.contains("\"pad\"")));
        let text = m.render_string();
        assert!(text.contains("sbc_cdr_spool_full 1"), "{text}");
        assert!(text.contains("sbc_cdr_spool_refused_total 3"), "{text}");
        spool.lock().unwrap().set_sent(100).unwrap();
        w.write(&serde_json::json!({ "id": 9 }));
        assert!(m.render_string().contains("sbc_cdr_spool_full 0"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
