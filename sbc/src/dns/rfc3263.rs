//! RFC 3263 §4 server location, without I/O: which DNS queries to make for
//! a SIP URI's host, port and transport, and how their answers become an
//! ordered list of `(address, transport)` targets. The lookups go through
//! the [`Lookup`] trait (hickory in production, a table in tests); SRV
//! weighted ordering (RFC 2782) takes its random numbers as an argument.

use std::net::{IpAddr, SocketAddr};

use crate::transport::Proto;

/// What to locate: the host part of a SIP URI (or a trunk's `address`),
/// its explicit port and `transport` parameter, and whether it is a SIPS URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostSpec {
    /// The host name, lowercase, without a trailing dot (or an IP literal).
    pub host: String,
    /// An explicit port (skips NAPTR and SRV).
    pub port: Option<u16>,
    /// An explicit transport (skips NAPTR).
    pub transport: Option<Proto>,
    /// A SIPS URI: TLS only.
    pub sips: bool,
}

impl HostSpec {
    /// Parses `host`, `host:port`, `ip`, `ip:port`, `[v6]` or `[v6]:port`.
    /// `None` when it is neither an IP literal nor a DNS name.
    #[must_use]
    pub fn parse(s: &str, transport: Option<Proto>, sips: bool) -> Option<Self> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, tail) = rest.split_once(']')?;
            h.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':')?.parse::<u16>().ok().filter(|p| *p != 0)?),
            };
            (h.to_owned(), port)
        } else if s.parse::<IpAddr>().is_ok() {
            (s.to_owned(), None)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p.parse::<u16>().ok().filter(|p| *p != 0)?)),
                None => (s.to_owned(), None),
            }
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.parse::<IpAddr>().is_err() && !is_dns_name(&host) {
            return None;
        }
        Some(Self { host, port, transport, sips })
    }

    /// The IP literal, when the host is one (no DNS at all).
    #[must_use]
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Whether resolving it needs DNS.
    #[must_use]
    pub fn needs_dns(&self) -> bool {
        self.ip().is_none()
    }
}

/// Whether `s` is a syntactically valid DNS host name (letters, digits,
/// hyphens; labels of 1 to 63 characters; at least one letter somewhere so
/// that a bad IPv4 literal is not taken for a name).
#[must_use]
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// One NAPTR record (RFC 3403), as far as SIP uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    /// Lower first.
    pub order: u16,
    /// Lower first within an order.
    pub preference: u16,
    /// `s` for SRV (the only flag SIP uses).
    pub flags: String,
    /// `SIP+D2U`, `SIP+D2T`, `SIPS+D2T`, ...
    pub service: String,
    /// The SRV name to look up.
    pub replacement: String,
}

/// One SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower first.
    pub priority: u16,
    /// Share within a priority.
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Host to look up (A/AAAA); `.` means "not available here".
    pub target: String,
}

/// Why a lookup gave nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The name or the record type does not exist (cacheable, RFC 2308).
    NotFound,
    /// The server failed or did not answer (retry later).
    Failed(String),
}

/// Records and the TTL of the answer (seconds).
pub type Answer<T> = Result<(Vec<T>, u32), LookupError>;

/// The DNS queries RFC 3263 needs.
pub trait Lookup {
    /// NAPTR records of `name`.
    fn naptr(&mut self, name: &str) -> Answer<Naptr>;
    /// SRV records of `name`.
    fn srv(&mut self, name: &str) -> Answer<Srv>;
    /// A and AAAA addresses of `name`.
    fn addrs(&mut self, name: &str) -> Answer<IpAddr>;
}

/// The SRV name prefix and transport of a NAPTR service we speak.
fn service(s: &str, sips: bool) -> Option<Proto> {
    match s.to_ascii_uppercase().as_str() {
        "SIP+D2U" if !sips => Some(Proto::Udp),
        "SIP+D2T" if !sips => Some(Proto::Tcp),
        "SIPS+D2T" => Some(Proto::Tls),
        _ => None,
    }
}

fn srv_name(host: &str, proto: Proto) -> String {
    match proto {
        Proto::Udp => format!("_sip._udp.{host}"),
        Proto::Tcp => format!("_sip._tcp.{host}"),
        Proto::Tls => format!("_sips._tcp.{host}"),
    }
}

fn default_port(proto: Proto) -> u16 {
    if proto == Proto::Tls {
        5061
    } else {
        5060
    }
}

/// One server of a resolution: an SRV record's priority and weight with
/// the addresses of its target (or a bare A/AAAA answer, priority 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// SRV priority (lower first).
    pub priority: u16,
    /// SRV weight.
    pub weight: u16,
    /// Its addresses, in the order DNS gave them.
    pub addrs: Vec<SocketAddr>,
    /// The transport.
    pub proto: Proto,
    /// The SRV target (or the host), for `sbc ctl trunks` and logs.
    pub name: String,
}

/// The outcome of locating a host: its servers (kept unordered within a
/// priority: [`Resolution::order`] draws the order per call) and the TTL
/// of the shortest-lived record used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Servers; their order among equal priorities is drawn per call.
    pub servers: Vec<Server>,
    /// Seconds the answer may be cached (before the caps).
    pub ttl: u32,
}

impl Resolution {
    /// All `(address, transport)` targets, in the order to try them:
    /// by priority, and within a priority by RFC 2782's weighted draw
    /// (`rand` gives uniform random numbers; servers of weight 0 come first
    /// in the running sum, so they are picked only when the draw is 0).
    pub fn order(&self, rand: &mut dyn FnMut() -> u32) -> Vec<(SocketAddr, Proto)> {
        let mut servers: Vec<&Server> = self.servers.iter().collect();
        // Stable: NAPTR order among equal SRV priorities is kept.
        servers.sort_by_key(|s| s.priority);
        let mut out = Vec::new();
        let mut i = 0;
        while i < servers.len() {
            let p = servers[i].priority;
            let mut group: Vec<&Server> = servers[i..].iter().take_while(|s| s.priority == p).copied().collect();
            i += group.len();
            group.sort_by_key(|s| s.weight != 0);
            while !group.is_empty() {
                let total: u32 = group.iter().map(|s| u32::from(s.weight)).sum();
                let pick = if total == 0 { 0 } else { rand() % (total + 1) };
                let mut running = 0;
                let k = group
                    .iter()
                    .position(|s| {
                        running += u32::from(s.weight);
                        running >= pick
                    })
                    .unwrap_or(0);
                let s = group.remove(k);
                out.extend(s.addrs.iter().map(|a| (*a, s.proto)));
            }
        }
        let mut seen = Vec::with_capacity(out.len());
        out.retain(|t| {
            let new = !seen.contains(t);
            seen.push(*t);
            new
        });
        out
    }
}

/// Locates `spec` (RFC 3263 §4.1 transport, §4.2 port and address):
///
/// - an IP literal: that address, the port given or the default;
/// - a port given: A/AAAA of the host;
/// - a transport given: SRV of that transport, else A/AAAA;
/// - neither: NAPTR (the services we speak, by order and preference), each
///   NAPTR's SRV; with no NAPTR, SRV of each transport (SIPS: TLS only);
///   with no SRV either, A/AAAA with the default port.
///
/// # Errors
/// [`LookupError::NotFound`] when no step gave an address;
/// [`LookupError::Failed`] when a server failure left nothing to use.
pub fn resolve(spec: &HostSpec, dns: &mut dyn Lookup) -> Result<Resolution, LookupError> {
    let base = if spec.sips { Proto::Tls } else { Proto::Udp };
    let proto = spec.transport.unwrap_or(base);
    if let Some(ip) = spec.ip() {
        let addr = SocketAddr::new(ip, spec.port.unwrap_or(default_port(proto)));
        let server = Server { priority: 0, weight: 0, addrs: vec![addr], proto, name: spec.host.clone() };
        return Ok(Resolution { servers: vec![server], ttl: u32::MAX });
    }
    if let Some(port) = spec.port {
        return address(&spec.host, port, proto, dns);
    }
    let mut failure = None;
    let mut ttl = u32::MAX;
    let mut servers = Vec::new();
    let note = |e: LookupError, failure: &mut Option<LookupError>| {
        if let LookupError::Failed(_) = e {
            failure.get_or_insert(e);
        }
    };
    if spec.transport.is_none() {
        match dns.naptr(&spec.host) {
            Ok((mut recs, t)) => {
                recs.retain(|n| n.flags.eq_ignore_ascii_case("s") && service(&n.service, spec.sips).is_some());
                recs.sort_by_key(|n| (n.order, n.preference));
                if !recs.is_empty() {
                    ttl = ttl.min(t);
                }
                for n in &recs {
                    let Some(p) = service(&n.service, spec.sips) else { continue };
                    match srv(n.replacement.trim_end_matches('.'), p, dns) {
                        Ok(r) => {
                            ttl = ttl.min(r.ttl);
                            servers.extend(r.servers);
                        }
                        Err(e) => note(e, &mut failure),
                    }
                }
            }
            Err(e) => note(e, &mut failure),
        }
    }
    if servers.is_empty() {
        let protos = match (spec.transport, spec.sips) {
            (Some(p), _) => vec![p],
            (None, true) => vec![Proto::Tls],
            (None, false) => vec![Proto::Udp, Proto::Tcp],
        };
        for p in protos {
            match srv(&srv_name(&spec.host, p), p, dns) {
                Ok(r) => {
                    ttl = ttl.min(r.ttl);
                    servers.extend(r.servers);
                }
                Err(e) => note(e, &mut failure),
            }
        }
    }
    if servers.is_empty() {
        return match address(&spec.host, default_port(proto), proto, dns) {
            Ok(r) => Ok(r),
            Err(LookupError::NotFound) => Err(failure.unwrap_or(LookupError::NotFound)),
            Err(e) => Err(e),
        };
    }
    Ok(Resolution { servers, ttl })
}

fn address(host: &str, port: u16, proto: Proto, dns: &mut dyn Lookup) -> Result<Resolution, LookupError> {
    let (ips, ttl) = dns.addrs(host)?;
    if ips.is_empty() {
        return Err(LookupError::NotFound);
    }
    let addrs = ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
    Ok(Resolution { servers: vec![Server { priority: 0, weight: 0, addrs, proto, name: host.to_owned() }], ttl })
}

fn srv(name: &str, proto: Proto, dns: &mut dyn Lookup) -> Result<Resolution, LookupError> {
    let (recs, mut ttl) = dns.srv(name)?;
    let mut servers = Vec::new();
    let mut failure = None;
    for r in recs {
        let target = r.target.trim_end_matches('.');
        if target.is_empty() {
            continue; // "." : the service is decidedly not available here
        }
        match dns.addrs(target) {
            Ok((ips, t)) if !ips.is_empty() => {
                ttl = ttl.min(t);
                let addrs = ips.into_iter().map(|ip| SocketAddr::new(ip, r.port)).collect();
                servers.push(Server { priority: r.priority, weight: r.weight, addrs, proto, name: target.to_owned() });
            }
            Ok(_) | Err(LookupError::NotFound) => {}
            Err(e) => failure = Some(e),
        }
    }
    if servers.is_empty() {
        return Err(failure.unwrap_or(LookupError::NotFound));
    }
    Ok(Resolution { servers, ttl })
}
