//! The `[[media_relay]]` tables: remote relays (`media-relay` or rtpengine)
//! driven over ng instead of the embedded relay. See `docs/scale-out.md`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// One `[[media_relay]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMediaRelay {
    #[serde(default)]
    name: String,
    ng: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default = "timeout")]
    timeout_ms: u64,
    #[serde(default = "two")]
    retransmits: u32,
    #[serde(default = "probe")]
    probe_interval_ms: u64,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn timeout() -> u64 {
    1000
}
fn probe() -> u64 {
    1000
}

/// A remote media relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRelayConfig {
    /// Name in logs, metrics, `sbc ctl relays` and replicated dialogs
    /// (default: the ng address).
    pub name: String,
    /// Its ng control address.
    pub ng: SocketAddr,
    /// Share of new calls (0: only when no other relay is up).
    pub weight: u32,
    /// How long an ng request may take, retransmissions included.
    pub timeout: Duration,
    /// ng retransmissions after the first send.
    pub retransmits: u32,
    /// `ping` probe interval.
    pub probe_interval: Duration,
}

/// Validates the tables.
pub(super) fn parse_media_relays(raw: &[RawMediaRelay]) -> Result<Vec<MediaRelayConfig>, ConfigError> {
    let mut out: Vec<MediaRelayConfig> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let key = |k: &str| format!("media_relay[{i}].{k}");
        let ng: SocketAddr = r.ng.parse().map_err(|_| invalid(key("ng"), format!("`{}` is not ADDR:PORT", r.ng)))?;
        if ng.ip().is_unspecified() || ng.port() == 0 {
            return Err(invalid(key("ng"), format!("`{ng}`: give the relay's own address and port")));
        }
        let name = if r.name.is_empty() { ng.to_string() } else { r.name.clone() };
        if name.contains([' ', '"', '\\']) || out.iter().any(|o| o.name == name) {
            return Err(invalid(key("name"), format!("`{name}` has spaces or quotes, or is used twice")));
        }
        if out.iter().any(|o| o.ng == ng) {
            return Err(invalid(key("ng"), format!("`{ng}` is listed twice")));
        }
        if !(100..=30_000).contains(&r.timeout_ms) {
            return Err(invalid(key("timeout_ms"), "must be between 100 and 30000"));
        }
        if r.retransmits > 10 {
            return Err(invalid(key("retransmits"), "at most 10"));
        }
        if r.probe_interval_ms < 100 {
            return Err(invalid(key("probe_interval_ms"), "at least 100"));
        }
        if r.weight > 10_000 {
            return Err(invalid(key("weight"), "at most 10000"));
        }
        out.push(MediaRelayConfig {
            name,
            ng,
            weight: r.weight,
            timeout: Duration::from_millis(r.timeout_ms),
            retransmits: r.retransmits,
            probe_interval: Duration::from_millis(r.probe_interval_ms),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DEFAULT_TOML};

    fn with(tables: &str) -> Result<Config, String> {
        Config::from_toml(&format!("{DEFAULT_TOML}\n{tables}")).map_err(|e| e.to_string())
    }

    #[test]
    fn none_means_the_embedded_relay() {
        assert!(with("").unwrap().media_relays.is_empty());
    }

    #[test]
    fn tables_parse_with_defaults() {
        let c = with(
            "[[media_relay]]\nng = \"10.0.0.5:2223\"\n\
             [[media_relay]]\nname = \"b\"\nng = \"10.0.0.6:2223\"\nweight = 3\ntimeout_ms = 600\nretransmits = 1\n",
        )
        .unwrap();
        let r = &c.media_relays;
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].name.as_str(), r[0].weight, r[0].retransmits), ("10.0.0.5:2223", 1, 2));
        assert_eq!(r[0].timeout, std::time::Duration::from_secs(1));
        assert_eq!((r[1].name.as_str(), r[1].weight, r[1].timeout.as_millis()), ("b", 3, 600));
    }

    #[test]
    fn bad_tables_name_the_key() {
        for (table, key) in [
            ("ng = \"relay:2223\"", "media_relay[0].ng"),
            ("ng = \"0.0.0.0:2223\"", "media_relay[0].ng"),
            ("ng = \"10.0.0.5:2223\"\ntimeout_ms = 5", "media_relay[0].timeout_ms"),
            ("ng = \"10.0.0.5:2223\"\nretransmits = 50", "media_relay[0].retransmits"),
            ("ng = \"10.0.0.5:2223\"\nprobe_interval_ms = 0", "media_relay[0].probe_interval_ms"),
            ("ng = \"10.0.0.5:2223\"\nname = \"a b\"", "media_relay[0].name"),
        ] {
            let e = with(&format!("[[media_relay]]\n{table}\n")).unwrap_err();
            assert!(e.contains(key), "{table}: {e}");
        }
        let e = with("[[media_relay]]\nng = \"10.0.0.5:2223\"\n[[media_relay]]\nng = \"10.0.0.5:2223\"\n").unwrap_err();
        assert!(e.contains("media_relay[1]"), "{e}");
        let e = with("[[media_relay]]\nng = \"10.0.0.5:2223\"\nwieght = 2\n").unwrap_err();
        assert!(e.contains("wieght"), "{e}");
    }
}
