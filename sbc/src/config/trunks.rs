//! `[[trunk]]` and `[[route]]`: the next hops calls go to and the order
//! they are tried in.

use std::net::SocketAddr;

use serde::Deserialize;

use super::tls::{trunk_dial, TrunkKeys};
use super::{invalid, yes, ConfigError, Realm};
use crate::transport::tls::Identity;

/// SIP transport of a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkTransport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS (the server is verified; see `ca_file`, `server_name`).
    Tls,
}

impl TrunkTransport {
    /// The SIP transport it is reached over.
    #[must_use]
    pub fn proto(self) -> crate::transport::Proto {
        match self {
            Self::Udp => crate::transport::Proto::Udp,
            Self::Tcp => crate::transport::Proto::Tcp,
            Self::Tls => crate::transport::Proto::Tls,
        }
    }
}

/// A next hop calls can be routed to.
#[derive(Debug, Clone)]
pub struct Trunk {
    /// Name used by routes, logs and metrics.
    pub name: String,
    /// Index of the realm it is reached in.
    pub realm: usize,
    /// Where to send (for a trunk named by DNS, `0.0.0.0:0`: its targets
    /// come from [`dns`](Self::dns)).
    pub address: SocketAddr,
    /// The DNS name (with its port and transport, when given) a trunk is
    /// resolved from by RFC 3263; `None` for an IP address.
    pub dns: Option<crate::dns::HostSpec>,
    /// Over what.
    pub transport: TrunkTransport,
    /// Concurrent-call cap (0: none).
    pub max_calls: u32,
    /// New calls per second cap (0: none).
    pub max_cps: u32,
    /// Share within its priority group.
    pub weight: u32,
    /// Whether OPTIONS health checks are sent to it.
    pub probe: bool,
    /// Source ACL, SRTP policy and topology hiding.
    pub policy: super::TrunkPolicy,
    /// Credentials for the carrier's challenges, and its registration.
    pub auth: Option<super::trunk_auth::TrunkAuth>,
    /// How it is dialled, for `transport = "tls"`.
    pub tls: Option<crate::transport::tls::Dial>,
}

/// A static route: Request-URI user prefix and/or domain → ordered trunks
/// (tried in turn on 408/5xx/timeouts: sequential forking).
#[derive(Debug, Clone)]
pub struct Route {
    /// Request-URI user prefix ("" matches every user).
    pub prefix: String,
    /// Request-URI host this route is for (`None`: local domains).
    pub domain: Option<String>,
    /// Priority groups, tried in order; within a group, trunks are tried in
    /// an order drawn by weight.
    pub trunks: Vec<Vec<usize>>,
    /// SRTP policy of calls it routes (with the trunk's: srtp if either says so).
    pub media_security: super::MediaSecurity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrunk {
    name: String,
    address: String,
    #[serde(default)]
    transport: Option<String>,
    #[serde(default)]
    max_calls: u32,
    #[serde(default)]
    max_cps: u32,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default = "yes")]
    probe: bool,
    #[serde(default)]
    realm: Option<String>,
    #[serde(default)]
    sources: Option<Vec<String>>,
    #[serde(default)]
    media_security: Option<String>,
    #[serde(default)]
    topology_hiding: bool,
    #[serde(default)]
    callid_rewrite: bool,
    #[serde(default)]
    strip_headers: Vec<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
    #[serde(default)]
    register: bool,
    #[serde(default)]
    register_expires: Option<u32>,
    #[serde(default)]
    register_domain: Option<String>,
    ca_file: Option<String>,
    #[serde(default)]
    tls_cert: Option<String>,
    #[serde(default)]
    tls_key: Option<String>,
    #[serde(default)]
    server_name: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    domain: Option<String>,
    trunks: Vec<String>,
    #[serde(default)]
    media_security: Option<String>,
}

/// Checks the `[[trunk]]` tables against the realms.
/// `listener`: the `[sip]` certificate, presented by TLS trunks without their own.
pub(super) fn parse_trunks(
    raw: &[RawTrunk],
    realms: &[Realm],
    listener: Option<&Identity>,
) -> Result<Vec<Trunk>, ConfigError> {
    let mut trunks: Vec<Trunk> = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        if t.name.is_empty() || trunks.iter().any(|x| x.name == t.name) {
            return Err(invalid(format!("trunk[{i}].name"), format!("`{}` is empty or used twice", t.name)));
        }
        let transport = match t.transport.as_deref().unwrap_or("udp").to_ascii_lowercase().as_str() {
            "udp" => TrunkTransport::Udp,
            "tcp" => TrunkTransport::Tcp,
            "tls" => TrunkTransport::Tls,
            other => return Err(invalid(format!("trunk[{i}].transport"), format!("`{other}`: want udp, tcp or tls"))),
        };
        let (address, dns) = trunk_address(i, t, transport)?;
        let keys = TrunkKeys {
            ca_file: t.ca_file.as_deref(),
            tls_cert: t.tls_cert.as_deref(),
            tls_key: t.tls_key.as_deref(),
            server_name: t.server_name.as_deref(),
        };
        let tls = trunk_dial(i, transport == TrunkTransport::Tls, address, &keys, listener)?;
        if t.weight == 0 {
            return Err(invalid(format!("trunk[{i}].weight"), "must be at least 1"));
        }
        let realm = match t.realm.as_deref() {
            None | Some("") => 0,
            Some(name) => realms.iter().position(|r| r.name == name).ok_or_else(|| {
                invalid(format!("trunk[{i}].realm"), format!("no realm named `{name}` (see [[realm]])"))
            })?,
        };
        let raw_policy = super::policy::RawTrunkPolicy {
            sources: t.sources.as_deref(),
            media_security: t.media_security.as_deref(),
            topology_hiding: t.topology_hiding,
            callid_rewrite: t.callid_rewrite,
            strip_headers: &t.strip_headers,
        };
        let mut policy = super::policy::trunk_policy(&format!("trunk[{i}]"), &raw_policy, address)?;
        if dns.is_some() && t.sources.is_none() {
            // A name has no address of its own to recognise the carrier by.
            policy.sources.clear();
            if t.topology_hiding || t.callid_rewrite || !t.strip_headers.is_empty() {
                return Err(invalid(
                    format!("trunk[{i}].sources"),
                    "list the carrier's networks: with a DNS name address, topology_hiding, callid_rewrite and \
                     strip_headers find the trunk's messages by its sources",
                ));
            }
        }
        let auth = super::trunk_auth::RawTrunkAuth {
            username: t.username.as_deref(),
            password: t.password.as_deref(),
            password_file: t.password_file.as_deref(),
            register: t.register,
            register_expires: t.register_expires,
            register_domain: t.register_domain.as_deref(),
        };
        let auth = super::trunk_auth::parse(i, &auth, address)?;
        trunks.push(Trunk {
            name: t.name.clone(),
            realm,
            address,
            dns,
            transport,
            max_calls: t.max_calls,
            max_cps: t.max_cps,
            weight: t.weight,
            probe: t.probe,
            policy,
            auth,
            tls,
        });
    }
    Ok(trunks)
}

/// A trunk's `address`: `ADDR:PORT` or an IP (port 5060, 5061 for TLS),
/// or a DNS name (with or without a port) resolved by RFC 3263.
fn trunk_address(
    i: usize,
    t: &RawTrunk,
    transport: TrunkTransport,
) -> Result<(SocketAddr, Option<crate::dns::HostSpec>), ConfigError> {
    let key = || format!("trunk[{i}].address");
    let explicit = t.transport.as_ref().map(|_| transport.proto());
    let spec = crate::dns::HostSpec::parse(&t.address, explicit, false).ok_or_else(|| {
        invalid(key(), format!("`{}` is not ADDR:PORT, an IP address or a DNS name[:PORT]", t.address))
    })?;
    if let Some(ip) = spec.ip() {
        let port = spec.port.unwrap_or(if transport == TrunkTransport::Tls { 5061 } else { 5060 });
        return Ok((SocketAddr::new(ip, port), None));
    }
    if transport == TrunkTransport::Tls {
        return Err(invalid(key(), "a DNS name with transport = \"tls\" is not supported yet: give an IP address"));
    }
    if t.register {
        return Err(invalid(
            format!("trunk[{i}].register"),
            "not supported yet for a trunk whose address is a DNS name",
        ));
    }
    Ok((SocketAddr::from(([0, 0, 0, 0], 0)), Some(spec)))
}

/// Checks the `[[route]]` tables against the trunks.
pub(super) fn parse_routes(raw: &[RawRoute], trunks: &[Trunk]) -> Result<Vec<Route>, ConfigError> {
    let mut routes = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        if r.trunks.is_empty() {
            return Err(invalid(format!("route[{i}].trunks"), "list at least one trunk"));
        }
        let mut idx = Vec::new();
        for group in &r.trunks {
            let mut g = Vec::new();
            for name in group.split('|').map(str::trim) {
                let k = trunks
                    .iter()
                    .position(|t| t.name == name)
                    .ok_or_else(|| invalid(format!("route[{i}].trunks"), format!("no trunk named `{name}`")))?;
                g.push(k);
            }
            idx.push(g);
        }
        routes.push(Route {
            prefix: r.prefix.clone(),
            domain: r.domain.clone().filter(|d| !d.is_empty()).map(|d| d.to_ascii_lowercase()),
            trunks: idx,
            media_security: super::policy::media_security(
                &format!("route[{i}].media_security"),
                r.media_security.as_deref(),
            )?,
        });
    }
    Ok(routes)
}
