//! The sbc configuration: one TOML file, validated at start, with errors
//! that name the key and the problem. The `[relay]` section is the embedded
//! media relay's, with the same keys as `media-relay`'s own file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use media_relay::config::RelayConfig;
use serde::Deserialize;

mod auth;
mod cdr;
mod dns;
mod guard;
mod ha;
mod ha_redis;
mod limits;
mod media_relays;
mod messages;
mod policy;
mod tls;
mod trunk_auth;
mod trunks;

pub use auth::{AuthConfig, Secret};
pub use cdr::{CdrPostgres, CdrSpool};
pub use guard::{GuardConfig, RateLimit, DEFAULT_SCANNERS};
pub use messages::MessagesConfig;
pub use policy::{Acl, AclAction, MediaSecurity, TrunkPolicy};
pub use tls::SipTls;
pub use trunk_auth::{TrunkAuth, TrunkRegister};

pub use trunks::{Route, Trunk, TrunkTransport};

pub use media_relays::MediaRelayConfig;

/// The configuration `sbc run` uses without `--config`.
pub const DEFAULT_TOML: &str = include_str!("../config/sbc.toml");

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a wrongly typed value.
    #[error("config: {0}")]
    Toml(String),
    /// A value that is not acceptable.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// Dotted key, e.g. `route[2].trunks`.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The `[relay]` section is invalid.
    #[error("{0}")]
    Relay(#[from] media_relay::config::ConfigError),
}

/// One network the sbc borders (a private network, a carrier's network):
/// its SIP socket, the address written in Via, Record-Route and Contact
/// there, and the relay interface that anchors media there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realm {
    /// Name used by trunks, logs and metrics.
    pub name: String,
    /// SIP listen address (UDP, and TCP when `sip.tcp`).
    pub listen: SocketAddr,
    /// Address written in Via, Record-Route and Contact in this realm.
    pub advertise: IpAddr,
    /// The `[relay]` interface name of this realm's media (`None`: the
    /// relay's first interface, the one-realm shorthand).
    pub media: Option<String>,
    /// SIP over TLS listen address (`tls_listen`), when served.
    pub tls_listen: Option<SocketAddr>,
}

/// Trunk health-check settings.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// OPTIONS probe interval (zero: no probes).
    pub interval: Duration,
    /// How long a probe may wait for an answer.
    pub probe_timeout: Duration,
    /// Hysteresis thresholds.
    pub thresholds: crate::health::HealthConfig,
    /// Probe answers that mean alive (empty: any answer).
    pub alive_codes: Vec<u16>,
    /// Answers on real calls that count as a trunk failure.
    pub failure_codes: Vec<u16>,
}

/// AlternatePath settings.
#[derive(Debug, Clone, Default)]
pub struct AlternatePath {
    /// Advertise `alternatePath` in our Via and Record-Route.
    pub enabled: bool,
    /// Backup addresses (`host:port`) to advertise.
    pub backups: Vec<String>,
}

/// Validated sbc configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The realms, at least one. `sip.listen` alone is one realm named
    /// `default`.
    pub realms: Vec<Realm>,
    /// The first realm's SIP listen address.
    pub listen: SocketAddr,
    /// Whether TCP is served too (in every realm).
    pub tcp: bool,
    /// The first realm's address written in Via and Record-Route.
    pub advertise: IpAddr,
    /// Domains (Request-URI hosts) that are ours.
    pub domains: Vec<String>,
    /// Largest SIP message accepted (bytes).
    pub max_message_size: usize,
    /// RFC 3261 T1.
    pub t1: Duration,
    /// RFC 3261 T2.
    pub t2: Duration,
    /// RFC 3261 T4.
    pub t4: Duration,
    /// How long an INVITE may wait for a provisional answer before the next
    /// hop is tried (or 408), well below timer B.
    pub invite_timeout: Duration,
    /// Dialogs that see no BYE end after this long.
    pub dialog_timeout: Duration,
    /// An answered call whose media stopped both ways this long is ended
    /// with BYE both ways (`sip.media_timeout_s`; zero: off).
    pub media_timeout: Duration,
    /// RFC 3261 timer C: a ringing branch with no final answer after this
    /// long is cancelled and the next target tried.
    pub timer_c: Duration,
    /// Registrar: Expires used when the REGISTER gives none.
    pub default_expires: u32,
    /// Registrar: shortest accepted expiry (423 below it).
    pub min_expires: u32,
    /// Registrar: longest granted expiry.
    pub max_expires: u32,
    /// Trunks.
    pub trunks: Vec<Trunk>,
    /// Routes, in match order.
    pub routes: Vec<Route>,
    /// CDR file (JSON lines); `None` disables CDRs.
    pub cdr_file: Option<PathBuf>,
    /// Prometheus listener.
    pub metrics: Option<SocketAddr>,
    /// tracing filter.
    pub log_level: String,
    /// Final responses after which an INVITE moves to the next target.
    pub failover_codes: Vec<u16>,
    /// Trunk health checks.
    pub health: HealthSettings,
    /// AlternatePath (primary/backup proxies).
    pub alternate_path: AlternatePath,
    /// Control socket for `sbc ctl`.
    pub control_socket: Option<PathBuf>,
    /// The embedded media relay.
    pub relay: RelayConfig,
    /// The active/standby pair, when `[ha]` is present.
    pub ha: Option<crate::ha::HaConfig>,
    /// The source ACL of each realm, by realm index.
    pub acls: Vec<Acl>,
    /// TLS (certificate, key) and the bounds on TCP and TLS connections.
    pub tls: SipTls,
    /// Digest authentication, when `[auth]` is present.
    pub auth: Option<AuthConfig>,
    /// Message limits (`[limits]`).
    pub limits: crate::sip::Limits,
    /// MESSAGE store and forward (`[messages]`).
    pub messages: MessagesConfig,
    /// Caps on registrations, transactions, dialogs and media sessions
    /// (the `max_*` keys of `[limits]`).
    pub caps: crate::caps::Caps,
    /// Per-source rate limits and bans (`[guard]`).
    pub guard: GuardConfig,
    /// Remote media relays driven over ng (`[[media_relay]]`); empty: the
    /// embedded relay.
    pub media_relays: Vec<MediaRelayConfig>,
    /// The CDR spool and its PostgreSQL forwarder (`[cdr] spool_dir`).
    pub cdr_spool: Option<CdrSpool>,
    /// `[dns]`: name servers and TTL caps for RFC 3263 resolution.
    pub dns: crate::dns::DnsConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    sip: RawSip,
    #[serde(default)]
    realm: Vec<RawRealm>,
    #[serde(default)]
    registrar: RawRegistrar,
    #[serde(default)]
    trunk: Vec<trunks::RawTrunk>,
    #[serde(default)]
    route: Vec<trunks::RawRoute>,
    #[serde(default)]
    cdr: cdr::RawCdr,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    alternate_path: RawAlternatePath,
    #[serde(default)]
    control: RawControl,
    relay: toml::Table,
    #[serde(default)]
    ha: Option<ha::RawHa>,
    #[serde(default)]
    auth: Option<auth::RawAuth>,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    messages: messages::RawMessages,
    #[serde(default)]
    guard: guard::RawGuard,
    #[serde(default)]
    media_relay: Vec<media_relays::RawMediaRelay>,
    #[serde(default)]
    dns: dns::RawDns,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default = "probe_interval")]
    interval_ms: u64,
    #[serde(default = "probe_timeout")]
    probe_timeout_ms: u64,
    #[serde(default = "three")]
    down_after: u32,
    #[serde(default = "three")]
    up_after: u32,
    #[serde(default = "hold_down")]
    hold_down_s: u64,
    #[serde(default)]
    failback_window_s: u64,
    #[serde(default)]
    alive_codes: Vec<u16>,
    #[serde(default = "failure_codes")]
    failure_codes: Vec<u16>,
}

impl Default for RawHealth {
    fn default() -> Self {
        Self {
            interval_ms: probe_interval(),
            probe_timeout_ms: probe_timeout(),
            down_after: three(),
            up_after: three(),
            hold_down_s: hold_down(),
            failback_window_s: 0,
            alive_codes: Vec::new(),
            failure_codes: failure_codes(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlternatePath {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    backups: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    #[serde(default)]
    socket: String,
}

fn probe_interval() -> u64 {
    5000
}
fn probe_timeout() -> u64 {
    1000
}
fn three() -> u32 {
    3
}
fn hold_down() -> u64 {
    10
}
fn failure_codes() -> Vec<u16> {
    vec![503]
}
fn failover_codes() -> Vec<u16> {
    vec![408, 500, 502, 503, 504]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRealm {
    name: String,
    listen: String,
    #[serde(default)]
    advertise: Option<String>,
    #[serde(default)]
    media: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    acl_action: Option<String>,
    tls_listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSip {
    #[serde(default)]
    listen: String,
    #[serde(default = "yes")]
    tcp: bool,
    #[serde(default)]
    advertise: Option<String>,
    domains: Vec<String>,
    #[serde(default = "max_msg")]
    max_message_size: usize,
    #[serde(default = "t1")]
    t1_ms: u64,
    #[serde(default = "t2")]
    t2_ms: u64,
    #[serde(default = "t4")]
    t4_ms: u64,
    #[serde(default = "invite_timeout")]
    invite_timeout_ms: u64,
    #[serde(default = "dialog_timeout")]
    dialog_timeout_s: u64,
    #[serde(default)]
    media_timeout_s: u64,
    #[serde(default = "timer_c")]
    timer_c_s: u64,
    #[serde(default = "info")]
    log_level: String,
    #[serde(default = "failover_codes")]
    failover_codes: Vec<u16>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    acl_action: Option<String>,
    tls_listen: Option<String>,
    #[serde(default)]
    tls_cert: Option<String>,
    #[serde(default)]
    tls_key: Option<String>,
    #[serde(default = "tls::default_handshake_ms")]
    tls_handshake_timeout_ms: u64,
    #[serde(default = "tls::default_max_connections")]
    max_connections: usize,
    #[serde(default = "tls::default_max_connections_per_ip")]
    max_connections_per_ip: usize,
    #[serde(default = "tls::default_idle_s")]
    connection_idle_s: u64,
    #[serde(default = "tls::default_message_deadline_ms")]
    message_deadline_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistrar {
    #[serde(default = "def_exp")]
    default_expires: u32,
    #[serde(default = "min_exp")]
    min_expires: u32,
    #[serde(default = "max_exp")]
    max_expires: u32,
}

impl Default for RawRegistrar {
    fn default() -> Self {
        Self { default_expires: def_exp(), min_expires: min_exp(), max_expires: max_exp() }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default)]
    listen: String,
}

fn yes() -> bool {
    true
}
fn max_msg() -> usize {
    65_535
}
fn t1() -> u64 {
    500
}
fn t2() -> u64 {
    4000
}
fn t4() -> u64 {
    5000
}
fn invite_timeout() -> u64 {
    2000
}
fn timer_c() -> u64 {
    181
}
fn dialog_timeout() -> u64 {
    4 * 3600
}
fn info() -> String {
    "info".into()
}
fn def_exp() -> u32 {
    3600
}
fn min_exp() -> u32 {
    60
}
fn max_exp() -> u32 {
    7200
}
fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), problem: problem.into() }
}

impl Config {
    /// Loads and validates a file.
    ///
    /// # Errors
    /// Names the key and the problem.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text)
    }

    /// The embedded default.
    ///
    /// # Errors
    /// Never for the shipped file (a unit test checks it).
    pub fn embedded_default() -> Result<Self, ConfigError> {
        Self::from_toml(DEFAULT_TOML)
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// Names the key and the problem.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let f: File = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        let mut relay_doc = toml::Table::new();
        relay_doc.insert("relay".into(), toml::Value::Table(f.relay.clone()));
        let mut relay =
            RelayConfig::from_toml(&toml::to_string(&relay_doc).map_err(|e| ConfigError::Toml(e.to_string()))?)?;
        let mut realms = parse_realms(&f, &relay)?;
        let acls = policy::parse_acls(&f, realms.len())?;
        let sip_tls = tls::parse_sip(&f, &mut realms)?;
        let (listen, advertise) = (realms[0].listen, realms[0].advertise);
        if f.sip.domains.is_empty() {
            return Err(invalid("sip.domains", "list at least one domain (the sbc's own address counts)"));
        }
        if !(1024..=1_048_576).contains(&f.sip.max_message_size) {
            return Err(invalid("sip.max_message_size", "must be between 1024 and 1048576 bytes"));
        }
        if f.sip.t1_ms == 0 || f.sip.t2_ms < f.sip.t1_ms {
            return Err(invalid("sip.t2_ms", "T1 must be > 0 and T2 >= T1"));
        }
        let msg_limits = limits::parse_limits(&f.limits, f.sip.max_message_size)?;
        let caps = limits::parse_caps(&f.limits)?;
        let guard = guard::parse_guard(f.guard)?;
        let r = f.registrar;
        if r.min_expires > r.max_expires || r.default_expires < r.min_expires || r.default_expires > r.max_expires {
            return Err(invalid("registrar.default_expires", "need min_expires <= default_expires <= max_expires"));
        }
        let trunks = trunks::parse_trunks(&f.trunk, &realms, sip_tls.identity.as_ref())?;
        let dns = dns::parse_dns(&f.dns)?;
        let routes = trunks::parse_routes(&f.route, &trunks)?;
        policy::check_conflicts(&trunks, f.alternate_path.enabled)?;
        let metrics = match f.metrics.listen.as_str() {
            "" | "off" => None,
            a => Some(a.parse().map_err(|_| invalid("metrics.listen", format!("`{a}` is not ADDR:PORT or off")))?),
        };
        let h = f.health;
        if h.interval_ms > 0 && h.probe_timeout_ms >= h.interval_ms {
            return Err(invalid("health.probe_timeout_ms", "must be shorter than health.interval_ms"));
        }
        if h.down_after == 0 || h.up_after == 0 {
            return Err(invalid("health.down_after", "down_after and up_after must be at least 1"));
        }
        if let Some(c) =
            h.alive_codes.iter().chain(&h.failure_codes).chain(&f.sip.failover_codes).find(|c| !(100..700).contains(*c))
        {
            return Err(invalid("health.alive_codes", format!("{c} is not a SIP status code")));
        }
        let health = HealthSettings {
            interval: Duration::from_millis(h.interval_ms),
            probe_timeout: Duration::from_millis(h.probe_timeout_ms),
            thresholds: crate::health::HealthConfig {
                down_after: h.down_after,
                up_after: h.up_after,
                hold_down: Duration::from_secs(h.hold_down_s),
                failback_window: Duration::from_secs(h.failback_window_s),
            },
            alive_codes: h.alive_codes,
            failure_codes: h.failure_codes,
        };
        if f.alternate_path.enabled && f.alternate_path.backups.is_empty() {
            return Err(invalid("alternate_path.backups", "list at least one backup when alternate_path is enabled"));
        }
        if let Some(b) = f.alternate_path.backups.iter().find(|b| b.contains(['"', ',', ' '])) {
            return Err(invalid(
                "alternate_path.backups",
                format!("`{b}`: want host[:port] without quotes, commas or spaces"),
            ));
        }
        // With the AF_XDP datapath, SIP to our UDP ports is steered to the
        // relay's workers and handed to the signaling plane.
        relay.sip_ports = realms.iter().map(|r| r.listen.port()).collect();
        relay.sip_ports.sort_unstable();
        relay.sip_ports.dedup();
        let ha = match f.ha {
            Some(h) => Some(ha::parse_ha(h, &realms, &mut relay)?),
            None => None,
        };
        let domains: Vec<String> = f.sip.domains.iter().map(|d| d.to_ascii_lowercase()).collect();
        let auth = f.auth.map(|a| auth::parse_auth(a, &domains)).transpose()?;
        Ok(Self {
            realms,
            listen,
            tcp: f.sip.tcp,
            advertise,
            domains,
            max_message_size: f.sip.max_message_size,
            t1: Duration::from_millis(f.sip.t1_ms),
            t2: Duration::from_millis(f.sip.t2_ms),
            t4: Duration::from_millis(f.sip.t4_ms),
            invite_timeout: Duration::from_millis(f.sip.invite_timeout_ms),
            dialog_timeout: Duration::from_secs(f.sip.dialog_timeout_s),
            media_timeout: Duration::from_secs(f.sip.media_timeout_s),
            timer_c: Duration::from_secs(f.sip.timer_c_s.max(1)),
            default_expires: r.default_expires,
            min_expires: r.min_expires,
            max_expires: r.max_expires,
            trunks,
            routes,
            cdr_spool: cdr::parse_spool(&f.cdr)?,
            cdr_file: match f.cdr.file.as_str() {
                "" | "off" => None,
                p => Some(PathBuf::from(p)),
            },
            metrics,
            log_level: f.sip.log_level,
            failover_codes: f.sip.failover_codes,
            health,
            alternate_path: AlternatePath { enabled: f.alternate_path.enabled, backups: f.alternate_path.backups },
            control_socket: match f.control.socket.as_str() {
                "" | "off" => None,
                p => Some(PathBuf::from(p)),
            },
            relay,
            ha,
            acls,
            tls: sip_tls,
            auth,
            limits: msg_limits,
            messages: messages::parse_messages(f.messages)?,
            caps,
            guard,
            media_relays: media_relays::parse_media_relays(&f.media_relay)?,
            dns,
        })
    }

    /// Whether a Request-URI host (with optional port) is one of ours.
    #[must_use]
    pub fn is_local_host(&self, host: &str, port: Option<u16>) -> bool {
        let h = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let ip = h.parse::<IpAddr>().ok();
        self.realms.iter().any(|r| {
            let port_ok = port.is_none_or(|p| p == r.listen.port() || r.tls_listen.is_some_and(|t| t.port() == p));
            let addr_match = ip.is_some_and(|ip| ip == r.advertise || ip == r.listen.ip());
            port_ok && (self.domains.contains(&h) || addr_match)
        })
    }

    /// The index of the realm named `name`.
    #[must_use]
    pub fn realm(&self, name: &str) -> Option<usize> {
        self.realms.iter().position(|r| r.name == name)
    }
}

/// `sip.listen` (one realm named `default`) or the `[[realm]]` tables,
/// checked against each other and against the relay's interfaces.
fn parse_realms(f: &File, relay: &RelayConfig) -> Result<Vec<Realm>, ConfigError> {
    let addr = |key: &str, listen: &str, advertise: Option<&str>| -> Result<(SocketAddr, IpAddr), ConfigError> {
        let l: SocketAddr =
            listen.parse().map_err(|_| invalid(format!("{key}.listen"), format!("`{listen}` is not ADDR:PORT")))?;
        let a = match advertise {
            None | Some("") => {
                if l.ip().is_unspecified() {
                    return Err(invalid(
                        format!("{key}.advertise"),
                        format!("required when {key}.listen is a wildcard address"),
                    ));
                }
                l.ip()
            }
            Some(a) => {
                a.parse().map_err(|_| invalid(format!("{key}.advertise"), format!("`{a}` is not an IP address")))?
            }
        };
        Ok((l, a))
    };
    if f.realm.is_empty() {
        if f.sip.listen.is_empty() {
            return Err(invalid("sip.listen", "required (or give [[realm]] tables)"));
        }
        let (listen, advertise) = addr("sip", &f.sip.listen, f.sip.advertise.as_deref())?;
        return Ok(vec![Realm { name: "default".into(), listen, advertise, media: None, tls_listen: None }]);
    }
    if !f.sip.listen.is_empty() || f.sip.advertise.as_deref().is_some_and(|a| !a.is_empty()) {
        return Err(invalid("sip.listen", "give either sip.listen (one realm) or [[realm]] tables, not both"));
    }
    let mut realms: Vec<Realm> = Vec::with_capacity(f.realm.len());
    for (i, r) in f.realm.iter().enumerate() {
        let key = format!("realm[{i}]");
        if r.name.is_empty() || r.name.contains([' ', '/']) || realms.iter().any(|x| x.name == r.name) {
            return Err(invalid(
                format!("{key}.name"),
                format!("`{}` is empty, has spaces or `/`, or is used twice", r.name),
            ));
        }
        let (listen, advertise) = addr(&key, &r.listen, r.advertise.as_deref())?;
        if let Some(other) = realms.iter().find(|x| {
            x.listen.port() == listen.port()
                && (x.listen.ip() == listen.ip() || x.listen.ip().is_unspecified() || listen.ip().is_unspecified())
        }) {
            return Err(invalid(
                format!("{key}.listen"),
                format!(
                    "{listen} is the same socket as realm `{}` ({}): give each realm its own",
                    other.name, other.listen
                ),
            ));
        }
        let media = match r.media.as_deref() {
            None | Some("") => {
                return Err(invalid(format!("{key}.media"), "name the relay interface of this realm's media"));
            }
            Some(m) => {
                if relay.interface(m).is_none() {
                    let names: Vec<&str> = relay.interfaces.iter().map(|i| i.name.as_str()).collect();
                    return Err(invalid(
                        format!("{key}.media"),
                        format!("no relay interface named `{m}` (relay.interfaces has {names:?}; name them NAME/ADDR)"),
                    ));
                }
                Some(m.to_owned())
            }
        };
        realms.push(Realm { name: r.name.clone(), listen, advertise, media, tls_listen: None });
    }
    Ok(realms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_local() {
        let c = Config::embedded_default().unwrap();
        assert!(c.listen.ip().is_loopback());
        assert!(c.relay.interfaces[0].local.is_loopback());
        assert!(c.metrics.is_some_and(|m| m.ip().is_loopback()));
        assert!(c.is_local_host("127.0.0.1", Some(c.listen.port())));
        assert!(!c.is_local_host("example.com", None));
    }

    fn with_ha(extra: &str) -> String {
        let base = DEFAULT_TOML
            .replace("listen = \"127.0.0.1:5060\"", "listen = \"10.9.0.100:5060\"")
            .replace("\"127.0.0.1\", \"localhost\"", "\"10.9.0.100\"");
        let relay_if = base.find("interfaces = [").unwrap();
        let end = base[relay_if..].find(']').unwrap() + relay_if + 1;
        let base = format!("{}interfaces = [\"10.9.0.100\"]{}", &base[..relay_if], &base[end..]);
        format!(
            "{base}\n[ha]\nnode_id = \"a\"\nredis = \"10.9.0.1:6379\"\nvip = \"10.9.0.100/24\"\ninterface = \"eth0\"\nheartbeat = \"10.9.0.11:7010\"\npeer = \"10.9.0.12:7010\"\n{extra}"
        )
    }

    #[test]
    fn ha_section_parses_and_sets_freebind() {
        let c = Config::from_toml(&with_ha("")).unwrap();
        let ha = c.ha.unwrap();
        assert_eq!(ha.vip.prefix, 24);
        assert_eq!(ha.lease, Duration::from_millis(120));
        assert!(c.relay.freebind);
        assert!(Config::embedded_default().unwrap().ha.is_none());
        assert!(!Config::embedded_default().unwrap().relay.freebind);
    }

    #[test]
    fn ha_errors_name_the_key() {
        for (extra, key) in [("lease_ms = 50", "ha.lease_ms"), ("check_interval_ms = 1", "ha.check_interval_ms")] {
            let e = Config::from_toml(&with_ha(extra)).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e = Config::from_toml(&with_ha("").replace("10.9.0.100/24", "10.9.0.100/40")).unwrap_err().to_string();
        assert!(e.contains("ha.vip"), "{e}");
        let e = Config::from_toml(&with_ha("").replace("listen = \"10.9.0.100:5060\"", "listen = \"10.9.0.5:5060\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sip.listen"), "{e}");
        let e = Config::from_toml(&with_ha("").replace("redis = \"10.9.0.1:6379\"", "redis = \"nowhere\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ha.redis"), "{e}");
    }

    fn with_realms(inside: &str, outside: &str, trunk_realm: &str) -> String {
        DEFAULT_TOML
            .replace("[sip]\nlisten = \"127.0.0.1:5060\"", "[sip]")
            .replace(
                "[registrar]",
                &format!(
                    "[[realm]]\nname = \"inside\"\n{inside}\n[[realm]]\nname = \"outside\"\n{outside}\n[registrar]"
                ),
            )
            .replace("weight = 1\n", &format!("weight = 1\nrealm = \"{trunk_realm}\"\n"))
            .replace(
                "interfaces = [\"127.0.0.1\"]",
                "interfaces = [\"inside/127.0.0.1\", \"outside/127.0.0.2!203.0.113.7\"]",
            )
    }

    #[test]
    fn realms_parse_and_trunks_name_theirs() {
        let c = Config::from_toml(&with_realms(
            "listen = \"127.0.0.1:5060\"\nmedia = \"inside\"",
            "listen = \"[::1]:5062\"\nadvertise = \"2001:db8::7\"\nmedia = \"outside\"",
            "outside",
        ))
        .unwrap();
        assert_eq!(c.realms.len(), 2);
        assert_eq!(c.realms[1].advertise, "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!(c.realms[1].media.as_deref(), Some("outside"));
        assert_eq!(c.trunks[0].realm, 1);
        assert_eq!(c.realm("outside"), Some(1));
        assert_eq!(c.relay.sip_ports, vec![5060, 5062], "SIP of every realm is handed over on the XDP datapath");
        assert!(c.is_local_host("2001:db8::7", Some(5062)) && c.is_local_host("127.0.0.1", Some(5060)));
        assert!(!c.is_local_host("2001:db8::7", Some(5060)), "each realm's address with its own port");
        // The one-realm shorthand.
        let d = Config::embedded_default().unwrap();
        assert_eq!((d.realms.len(), d.realms[0].name.as_str(), d.realms[0].media.as_ref()), (1, "default", None));
    }

    #[test]
    fn realm_errors_name_the_key() {
        let ok_in = "listen = \"127.0.0.1:5060\"\nmedia = \"inside\"";
        let ok_out = "listen = \"127.0.0.2:5060\"\nmedia = \"outside\"";
        for (inside, outside, trunk, key, words) in [
            (
                ok_in,
                "listen = \"127.0.0.2:5060\"\nmedia = \"dmz\"",
                "outside",
                "realm[1].media",
                "no relay interface named `dmz`",
            ),
            (
                ok_in,
                "listen = \"127.0.0.1:5060\"\nmedia = \"outside\"",
                "outside",
                "realm[1].listen",
                "same socket as realm `inside`",
            ),
            (
                ok_in,
                "listen = \"0.0.0.0:5060\"\nadvertise = \"192.0.2.1\"\nmedia = \"outside\"",
                "outside",
                "realm[1].listen",
                "same socket",
            ),
            (ok_in, ok_out, "carrier-net", "trunk[0].realm", "no realm named `carrier-net`"),
            (ok_in, "listen = \"0.0.0.0:5062\"\nmedia = \"outside\"", "outside", "realm[1].advertise", "wildcard"),
            ("listen = \"127.0.0.1:5060\"", ok_out, "outside", "realm[0].media", "name the relay interface"),
        ] {
            let e = Config::from_toml(&with_realms(inside, outside, trunk)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(words), "want {key} / {words}: {e}");
        }
        let both = with_realms(ok_in, ok_out, "outside").replace("[sip]", "[sip]\nlisten = \"127.0.0.1:5070\"");
        let e = Config::from_toml(&both).unwrap_err().to_string();
        assert!(e.contains("sip.listen") && e.contains("not both"), "{e}");
    }

    /// Two realms (inside on eth0, outside on eth1) with `[ha]`; `realm_vips`
    /// is the TOML after `realm_vips = `.
    fn with_ha_realms(outside_listen: &str, outside_media: &str, realm_vips: &str) -> String {
        let base = with_realms(
            "listen = \"10.9.0.100:5060\"\nmedia = \"inside\"",
            &format!("listen = \"{outside_listen}\"\nmedia = \"outside\""),
            "outside",
        )
        .replace(
            "interfaces = [\"inside/127.0.0.1\", \"outside/127.0.0.2!203.0.113.7\"]",
            &format!("interfaces = [\"inside/10.9.0.100\", \"outside/{outside_media}\"]"),
        );
        format!(
            "{base}\n[ha]\nnode_id = \"a\"\nredis = \"10.9.0.1:6379\"\nvip = \"10.9.0.100/24\"\ninterface = \"eth0\"\nheartbeat = \"10.9.0.11:7010\"\npeer = \"10.9.0.12:7010\"\nrealm_vips = {realm_vips}\n"
        )
    }

    const OUTSIDE_VIP: &str = "[{ realm = \"outside\", vip = \"192.0.2.100/26\", interface = \"eth1\" }]";

    #[test]
    fn ha_holds_one_vip_per_realm() {
        let c = Config::from_toml(&with_ha_realms("192.0.2.100:5060", "192.0.2.100", OUTSIDE_VIP)).unwrap();
        let ha = c.ha.unwrap();
        assert_eq!(ha.vip.dev, "eth0");
        assert_eq!(ha.realm_vips.len(), 1);
        assert_eq!(ha.realm_vips[0].realm, "outside");
        let vips: Vec<String> = ha.vips().map(|v| format!("{}/{} {}", v.addr, v.prefix, v.dev)).collect();
        assert_eq!(vips, ["10.9.0.100/24 eth0", "192.0.2.100/26 eth1"]);
        assert!(c.relay.freebind);
        // The table form, and an advertised media address behind NAT.
        let tables = with_ha_realms("192.0.2.100:5060", "192.0.2.100!203.0.113.7", "[]").replace(
            "realm_vips = []",
            "[[ha.realm_vips]]\nrealm = \"outside\"\nvip = \"192.0.2.100/26\"\ninterface = \"eth1\"",
        );
        assert_eq!(Config::from_toml(&tables).unwrap().ha.unwrap().realm_vips[0].vip.prefix, 26);
        // The one-realm shorthand needs none.
        assert!(Config::from_toml(&with_ha("")).unwrap().ha.unwrap().realm_vips.is_empty());
    }

    #[test]
    fn ha_realm_vip_errors_name_the_key() {
        let vip =
            |realm: &str, vip: &str| format!("[{{ realm = \"{realm}\", vip = \"{vip}\", interface = \"eth1\" }}]");
        for (listen, media, realm_vips, key, words) in [
            (
                "192.0.2.100:5060",
                "192.0.2.100",
                vip("dmz", "192.0.2.100/26"),
                "ha.realm_vips[0].realm",
                "no realm named `dmz`",
            ),
            (
                "192.0.2.100:5060",
                "192.0.2.100",
                vip("inside", "192.0.2.100/26"),
                "ha.realm_vips[0].realm",
                "first realm",
            ),
            ("192.0.2.100:5060", "192.0.2.100", "[]".into(), "ha.realm_vips", "realm `outside` has no virtual IP"),
            ("192.0.2.100:5060", "192.0.2.100", vip("outside", "192.0.2.100/33"), "ha.realm_vips[0].vip", "prefix"),
            ("192.0.2.100:5060", "192.0.2.100", vip("outside", "192.0.2.100"), "ha.realm_vips[0].vip", "ADDR/PREFIX"),
            (
                "192.0.2.100:5060",
                "192.0.2.100",
                vip("outside", "10.9.0.100/16"),
                "ha.realm_vips[0].vip",
                "give it once",
            ),
            (
                "192.0.2.5:5060",
                "192.0.2.100",
                vip("outside", "192.0.2.100/26"),
                "realm[1].listen",
                "its virtual IP 192.0.2.100",
            ),
            ("192.0.2.100:5060", "192.0.2.5", vip("outside", "192.0.2.100/26"), "relay.interfaces", "realm `outside`"),
            ("192.0.2.100:5060", "10.9.0.100", vip("outside", "192.0.2.100/26"), "relay.interfaces", "192.0.2.100"),
        ] {
            let e = Config::from_toml(&with_ha_realms(listen, media, &realm_vips)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(words), "want {key} / {words}: {e}");
        }
        let e = Config::from_toml(&with_ha_realms(
            "192.0.2.100:5060",
            "192.0.2.100",
            "[{ realm = \"outside\", vip = \"192.0.2.100/26\", interface = \"\" }]",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("ha.realm_vips[0].interface"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml(&DEFAULT_TOML.replace("trunks = [\"local-trunk\"]", "trunks = [\"nope\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("route[0].trunks") && e.contains("nope"), "{e}");
        let e = Config::from_toml(&DEFAULT_TOML.replace("listen = \"127.0.0.1:5060\"", "listen = \"x\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sip.listen"), "{e}");
        let e = Config::from_toml(&DEFAULT_TOML.replace("port_min = 40000", "port_min = 1")).unwrap_err().to_string();
        assert!(e.contains("relay.port_min"), "{e}");
    }
}
