//! Call detail records: one JSON object per line, per call, appended to the
//! configured file when the call ends. (The durable store-and-forward spool
//! replaces this writer in a later issue.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use media_relay::control::CallReport;
use serde_json::{json, Value};

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

/// Appends CDRs to a file, one JSON object per line, flushed per record.
pub struct CdrWriter {
    file: Option<File>,
    path: String,
}

impl CdrWriter {
    /// Opens (creating) the file for appending; `None` disables CDRs.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        Ok(Self { file, path: path.map(|p| p.display().to_string()).unwrap_or_default() })
    }

    /// Writes one record. A write error is logged, never fatal to the call.
    pub fn write(&mut self, record: &Value) {
        let Some(f) = self.file.as_mut() else { return };
        let mut line = record.to_string();
        line.push('\n');
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::error!(path = %self.path, error = %e, "CDR write failed");
        }
    }
}
