//! `[dns]`: the name servers trunk hosts (and Route / Request-URI hosts)
//! are resolved with, and the TTL caps of the cache (see docs/dns.md).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::dns::{CacheConfig, DnsConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    #[serde(default)]
    servers: Vec<String>,
    #[serde(default = "min_ttl")]
    min_ttl_s: u64,
    #[serde(default = "max_ttl")]
    max_ttl_s: u64,
    #[serde(default = "negative_ttl")]
    negative_ttl_s: u64,
}

fn min_ttl() -> u64 {
    5
}

fn max_ttl() -> u64 {
    3600
}

fn negative_ttl() -> u64 {
    30
}

impl Default for RawDns {
    fn default() -> Self {
        Self { servers: Vec::new(), min_ttl_s: min_ttl(), max_ttl_s: max_ttl(), negative_ttl_s: negative_ttl() }
    }
}

/// Checks `[dns]`.
pub(super) fn parse_dns(raw: &RawDns) -> Result<DnsConfig, ConfigError> {
    let mut servers = Vec::new();
    for s in &raw.servers {
        let addr = s
            .parse::<SocketAddr>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| invalid("dns.servers", format!("`{s}` is not ADDR or ADDR:PORT")))?;
        servers.push(addr);
    }
    if raw.min_ttl_s > raw.max_ttl_s {
        return Err(invalid("dns.min_ttl_s", "must not exceed dns.max_ttl_s"));
    }
    if raw.max_ttl_s == 0 {
        return Err(invalid("dns.max_ttl_s", "must be at least 1"));
    }
    if raw.negative_ttl_s == 0 {
        return Err(invalid("dns.negative_ttl_s", "must be at least 1"));
    }
    Ok(DnsConfig {
        servers,
        cache: CacheConfig {
            min_ttl: Duration::from_secs(raw.min_ttl_s),
            max_ttl: Duration::from_secs(raw.max_ttl_s),
            negative_ttl: Duration::from_secs(raw.negative_ttl_s),
        },
    })
}
