//! The `[cdr]` section: the JSON-lines file, the durable spool and the
//! PostgreSQL forwarder (see `docs/cdr.md`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::spool::SyncMode;

/// `[cdr]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCdr {
    #[serde(default)]
    pub(super) file: String,
    #[serde(default)]
    spool_dir: String,
    #[serde(default = "def_max_spool_mb")]
    max_spool_mb: u64,
    /// Overrides `max_spool_mb` (small spools, for tests).
    #[serde(default)]
    max_spool_kb: Option<u64>,
    #[serde(default = "def_segment_kb")]
    segment_kb: u64,
    #[serde(default = "def_sync")]
    sync: String,
    #[serde(default)]
    postgres: String,
    #[serde(default = "def_table")]
    table: String,
    #[serde(default = "def_batch")]
    batch: usize,
    #[serde(default = "def_batch_delay_ms")]
    batch_delay_ms: u64,
    #[serde(default = "def_probe_ms")]
    probe_interval_ms: u64,
    #[serde(default = "def_three")]
    down_after: u32,
    #[serde(default = "def_two")]
    up_after: u32,
    #[serde(default = "def_hold_ms")]
    hold_down_ms: u64,
}

impl Default for RawCdr {
    fn default() -> Self {
        Self {
            file: String::new(),
            spool_dir: String::new(),
            max_spool_mb: def_max_spool_mb(),
            max_spool_kb: None,
            segment_kb: def_segment_kb(),
            sync: def_sync(),
            postgres: String::new(),
            table: def_table(),
            batch: def_batch(),
            batch_delay_ms: def_batch_delay_ms(),
            probe_interval_ms: def_probe_ms(),
            down_after: def_three(),
            up_after: def_two(),
            hold_down_ms: def_hold_ms(),
        }
    }
}

fn def_max_spool_mb() -> u64 {
    1024
}
fn def_segment_kb() -> u64 {
    4096
}
fn def_sync() -> String {
    "always".into()
}
fn def_table() -> String {
    "cdr".into()
}
fn def_batch() -> usize {
    500
}
fn def_batch_delay_ms() -> u64 {
    100
}
fn def_probe_ms() -> u64 {
    1000
}
fn def_three() -> u32 {
    3
}
fn def_two() -> u32 {
    2
}
fn def_hold_ms() -> u64 {
    5000
}

/// The spool and its forwarder, when `spool_dir` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrSpool {
    /// Spool directory.
    pub dir: PathBuf,
    /// Segment size, max size and durability.
    pub options: crate::spool::SpoolOptions,
    /// The collector, when `postgres` is set.
    pub postgres: Option<CdrPostgres>,
}

/// The PostgreSQL collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrPostgres {
    /// libpq-style connection string (`host=... user=... dbname=...`).
    pub conninfo: String,
    /// Table name (created when missing).
    pub table: String,
    /// Most CDRs per INSERT transaction.
    pub batch: usize,
    /// After a partial batch, how long the next one gathers CDRs.
    pub batch_delay: Duration,
    /// Availability probe interval (connect, then `SELECT 1`).
    pub probe_interval: Duration,
    /// Hysteresis, the same rules as trunk health.
    pub thresholds: crate::health::HealthConfig,
}

/// Checks the spool keys; `None` without `spool_dir`.
pub(super) fn parse_spool(r: &RawCdr) -> Result<Option<CdrSpool>, ConfigError> {
    if r.spool_dir.is_empty() || r.spool_dir == "off" {
        if !r.postgres.is_empty() {
            return Err(invalid("cdr.postgres", "needs cdr.spool_dir (CDRs are forwarded from the spool)"));
        }
        return Ok(None);
    }
    if r.max_spool_mb == 0 {
        return Err(invalid("cdr.max_spool_mb", "must be at least 1"));
    }
    if r.max_spool_kb == Some(0) {
        return Err(invalid("cdr.max_spool_kb", "must be at least 1"));
    }
    if !(4..=1_048_576).contains(&r.segment_kb) {
        return Err(invalid("cdr.segment_kb", "must be between 4 and 1048576"));
    }
    let sync = match r.sync.as_str() {
        "always" => SyncMode::Always,
        "never" => SyncMode::Never,
        s => return Err(invalid("cdr.sync", format!("`{s}` is not always or never"))),
    };
    let options = crate::spool::SpoolOptions {
        segment_bytes: r.segment_kb.saturating_mul(1024),
        max_bytes: r.max_spool_kb.map_or(r.max_spool_mb.saturating_mul(1024 * 1024), |k| k.saturating_mul(1024)),
        sync,
    };
    let postgres = if r.postgres.is_empty() {
        None
    } else {
        if r.postgres.parse::<postgres::Config>().is_err() {
            return Err(invalid("cdr.postgres", "is not a valid connection string (host=... user=... dbname=...)"));
        }
        let t = &r.table;
        let ident = t.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && t.len() <= 63;
        if !ident {
            return Err(invalid("cdr.table", "must be a lower-case SQL identifier (a-z, 0-9, _)"));
        }
        if !(1..=10_000).contains(&r.batch) {
            return Err(invalid("cdr.batch", "must be between 1 and 10000"));
        }
        if r.batch_delay_ms > 60_000 {
            return Err(invalid("cdr.batch_delay_ms", "must be at most 60000"));
        }
        if r.probe_interval_ms < 10 {
            return Err(invalid("cdr.probe_interval_ms", "must be at least 10"));
        }
        if r.down_after == 0 || r.up_after == 0 {
            return Err(invalid("cdr.down_after", "down_after and up_after must be at least 1"));
        }
        Some(CdrPostgres {
            conninfo: r.postgres.clone(),
            table: t.clone(),
            batch: r.batch,
            batch_delay: Duration::from_millis(r.batch_delay_ms),
            probe_interval: Duration::from_millis(r.probe_interval_ms),
            thresholds: crate::health::HealthConfig {
                down_after: r.down_after,
                up_after: r.up_after,
                hold_down: Duration::from_millis(r.hold_down_ms),
                failback_window: Duration::ZERO,
            },
        })
    };
    Ok(Some(CdrSpool { dir: PathBuf::from(&r.spool_dir), options, postgres }))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DEFAULT_TOML};
    use crate::spool::SyncMode;

    fn with(keys: &str) -> Result<Config, String> {
        Config::from_toml(&DEFAULT_TOML.replace("[cdr]\n", &format!("[cdr]\n{keys}\n"))).map_err(|e| e.to_string())
    }

    #[test]
    fn spool_and_collector_parse() {
        let c =
            with("spool_dir = \"/tmp/s\"\npostgres = \"host=db user=cdr dbname=billing\"\nmax_spool_kb = 8").unwrap();
        let s = c.cdr_spool.unwrap();
        assert_eq!(s.options.max_bytes, 8192);
        assert_eq!(s.options.sync, SyncMode::Always);
        let pg = s.postgres.unwrap();
        assert_eq!((pg.table.as_str(), pg.batch), ("cdr", 500));
        assert_eq!(pg.thresholds.down_after, 3);
        assert!(with("").unwrap().cdr_spool.is_none());
        let s = with("spool_dir = \"/tmp/s\"\nsync = \"never\"").unwrap().cdr_spool.unwrap();
        assert_eq!((s.options.sync, s.options.max_bytes, s.postgres), (SyncMode::Never, 1 << 30, None));
    }

    #[test]
    fn errors_name_the_key() {
        for (keys, key) in [
            ("postgres = \"host=x\"", "cdr.postgres"),
            ("spool_dir = \"/tmp/s\"\npostgres = \"host='x\"", "cdr.postgres"),
            ("spool_dir = \"/tmp/s\"\nsync = \"sometimes\"", "cdr.sync"),
            ("spool_dir = \"/tmp/s\"\nmax_spool_mb = 0", "cdr.max_spool_mb"),
            ("spool_dir = \"/tmp/s\"\nsegment_kb = 1", "cdr.segment_kb"),
            ("spool_dir = \"/tmp/s\"\npostgres = \"host=x\"\ntable = \"cdr; drop\"", "cdr.table"),
            ("spool_dir = \"/tmp/s\"\npostgres = \"host=x\"\nbatch = 0", "cdr.batch"),
            ("spool_dir = \"/tmp/s\"\npostgres = \"host=x\"\nup_after = 0", "cdr.down_after"),
            ("spool_dir = \"/tmp/s\"\nspool = 1", "spool"),
        ] {
            let e = with(keys).unwrap_err();
            assert!(e.contains(key), "{keys}: {e}");
        }
    }
}
