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

#[cfg(test)]
mod tests {
    use crate::config::{Config, DEFAULT_TOML};
    use crate::transport::Proto;
    use std::time::Duration;

    fn with(address: &str, extra: &str) -> Result<Config, String> {
        let toml = DEFAULT_TOML
            .replace("address = \"127.0.0.1:5070\"\ntransport = \"udp\"", &format!("address = \"{address}\"{extra}"));
        Config::from_toml(&toml).map_err(|e| e.to_string())
    }

    #[test]
    fn trunk_addresses_by_name_or_ip() {
        let c = with("Carrier.Example", "").unwrap();
        let d = c.trunks[0].dns.clone().unwrap();
        assert_eq!((d.host.as_str(), d.port, d.transport), ("carrier.example", None, None), "RFC 3263 in full");
        let c = with("carrier.example:5080", "\ntransport = \"tcp\"").unwrap();
        let d = c.trunks[0].dns.clone().unwrap();
        assert_eq!((d.port, d.transport), (Some(5080), Some(Proto::Tcp)), "an explicit port and transport");
        let c = with("192.0.2.1", "").unwrap();
        assert_eq!(c.trunks[0].address, "192.0.2.1:5060".parse().unwrap(), "an IP without a port: 5060");
        assert!(c.trunks[0].dns.is_none());
        let c = with("carrier.example", "\ntopology_hiding = true\nsources = [\"192.0.2.0/24\"]").unwrap();
        assert!(c.trunks[0].policy.topology_hiding, "a name with its sources may hide topology");
        assert!(with("carrier.example", "").unwrap().trunks[0].policy.sources.is_empty(), "no made-up source");
        assert_eq!(c.dns.cache.negative_ttl, Duration::from_secs(30), "defaults");
    }

    #[test]
    fn bad_dns_keys_name_the_key() {
        for (address, extra, key) in [
            ("bad name!", "", "trunk[0].address"),
            ("carrier.example:0", "", "trunk[0].address"),
            ("carrier.example", "\ntransport = \"tls\"", "trunk[0].address"),
            ("carrier.example", "\nusername = \"u\"\npassword = \"p\"\nregister = true", "trunk[0].register"),
            ("carrier.example", "\ntopology_hiding = true", "trunk[0].sources"),
        ] {
            let e = with(address, extra).unwrap_err();
            assert!(e.contains(key), "{address}{extra}: {e}");
        }
        let dns =
            |body: &str| Config::from_toml(&format!("{DEFAULT_TOML}\n[dns]\n{body}\n")).map_err(|e| e.to_string());
        let c = dns("servers = [\"10.0.0.53\", \"10.0.0.54:5353\"]\nmin_ttl_s = 2\nmax_ttl_s = 20").unwrap();
        assert_eq!(c.dns.servers, vec!["10.0.0.53:53".parse().unwrap(), "10.0.0.54:5353".parse().unwrap()]);
        assert_eq!(c.dns.cache.max_ttl, Duration::from_secs(20));
        for (body, key) in [
            ("servers = [\"ns.example\"]", "dns.servers"),
            ("min_ttl_s = 10\nmax_ttl_s = 5", "dns.min_ttl_s"),
            ("negative_ttl_s = 0", "dns.negative_ttl_s"),
            ("ttl = 3", "ttl"),
        ] {
            let e = dns(body).unwrap_err();
            assert!(e.contains(key), "{body}: {e}");
        }
    }
}
