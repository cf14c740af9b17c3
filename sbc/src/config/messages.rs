//! The `[messages]` section: MESSAGE store and forward (RFC 3428), see
//! `docs/messages.md`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[messages]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMessages {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    spool_dir: String,
    #[serde(default = "ttl")]
    ttl_s: u64,
    #[serde(default = "max_total")]
    max_messages: usize,
    #[serde(default = "max_per_target")]
    max_per_target: usize,
    #[serde(default = "max_spool_mb")]
    max_spool_mb: u64,
    #[serde(default = "retry_min")]
    retry_min_s: u64,
    #[serde(default = "retry_max")]
    retry_max_s: u64,
}

impl Default for RawMessages {
    fn default() -> Self {
        Self {
            enabled: true,
            spool_dir: String::new(),
            ttl_s: ttl(),
            max_messages: max_total(),
            max_per_target: max_per_target(),
            max_spool_mb: max_spool_mb(),
            retry_min_s: retry_min(),
            retry_max_s: retry_max(),
        }
    }
}

fn yes() -> bool {
    true
}
fn ttl() -> u64 {
    86_400
}
fn max_total() -> usize {
    10_000
}
fn max_per_target() -> usize {
    100
}
fn max_spool_mb() -> u64 {
    64
}
fn retry_min() -> u64 {
    2
}
fn retry_max() -> u64 {
    300
}

/// MESSAGE store and forward settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagesConfig {
    /// Whether MESSAGEs for offline users and DOWN trunks are stored
    /// (else they are routed as before: 404/480, or sent to the trunk).
    pub enabled: bool,
    /// The spool directory; `None` keeps them in memory only (lost on restart).
    pub spool_dir: Option<PathBuf>,
    /// A stored message not delivered within this long expires.
    pub ttl: Duration,
    /// Stored messages at most (beyond: 503).
    pub max_messages: usize,
    /// Stored messages per target at most (beyond: 486).
    pub max_per_target: usize,
    /// The spool's size cap, bytes.
    pub max_spool_bytes: u64,
    /// The first retry after a failed delivery (doubling up to `retry_max`).
    pub retry_min: Duration,
    /// The longest wait between delivery retries.
    pub retry_max: Duration,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        parse_messages(RawMessages::default()).unwrap_or(Self {
            enabled: false,
            spool_dir: None,
            ttl: Duration::ZERO,
            max_messages: 0,
            max_per_target: 0,
            max_spool_bytes: 0,
            retry_min: Duration::ZERO,
            retry_max: Duration::ZERO,
        })
    }
}

/// Checks the section.
pub(super) fn parse_messages(r: RawMessages) -> Result<MessagesConfig, ConfigError> {
    if r.ttl_s == 0 {
        return Err(invalid("messages.ttl_s", "must be at least 1 second"));
    }
    if r.max_messages == 0 {
        return Err(invalid("messages.max_messages", "must be at least 1"));
    }
    if r.max_per_target == 0 || r.max_per_target > r.max_messages {
        return Err(invalid("messages.max_per_target", "must be between 1 and messages.max_messages"));
    }
    if r.max_spool_mb == 0 {
        return Err(invalid("messages.max_spool_mb", "must be at least 1"));
    }
    if r.retry_min_s == 0 || r.retry_max_s < r.retry_min_s {
        return Err(invalid("messages.retry_max_s", "need 1 <= retry_min_s <= retry_max_s"));
    }
    Ok(MessagesConfig {
        enabled: r.enabled,
        spool_dir: match r.spool_dir.as_str() {
            "" | "off" => None,
            p => Some(PathBuf::from(p)),
        },
        ttl: Duration::from_secs(r.ttl_s),
        max_messages: r.max_messages,
        max_per_target: r.max_per_target,
        max_spool_bytes: r.max_spool_mb.saturating_mul(1 << 20),
        retry_min: Duration::from_secs(r.retry_min_s),
        retry_max: Duration::from_secs(r.retry_max_s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<MessagesConfig, ConfigError> {
        let r: RawMessages = toml::from_str(t).map_err(|e| ConfigError::Toml(e.to_string()))?;
        parse_messages(r)
    }

    #[test]
    fn defaults_and_overrides() {
        let d = parse("").unwrap();
        assert_eq!((d.enabled, d.spool_dir.clone(), d.ttl), (true, None, Duration::from_secs(86_400)));
        assert_eq!(d, MessagesConfig::default());
        let c = parse("spool_dir = \"/var/spool/xsbc/messages\"\nttl_s = 60\nmax_per_target = 5").unwrap();
        assert_eq!(c.spool_dir, Some(PathBuf::from("/var/spool/xsbc/messages")));
        assert_eq!((c.ttl, c.max_per_target), (Duration::from_secs(60), 5));
    }

    #[test]
    fn errors_name_the_key() {
        for (t, key) in [
            ("ttl_s = 0", "messages.ttl_s"),
            ("max_messages = 0", "messages.max_messages"),
            ("max_per_target = 0", "messages.max_per_target"),
            ("max_messages = 5\nmax_per_target = 6", "messages.max_per_target"),
            ("max_spool_mb = 0", "messages.max_spool_mb"),
            ("retry_min_s = 10\nretry_max_s = 5", "messages.retry_max_s"),
        ] {
            let e = parse(t).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(key), "{t}: {e}");
        }
        assert!(parse("bogus = 1").is_err());
    }
}
